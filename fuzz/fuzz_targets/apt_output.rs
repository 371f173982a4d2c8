#![no_main]
// The parsers of provision::fuzz's target "apt_output".
libfuzzer_sys::fuzz_target!(|data: &[u8]| provision::fuzz::target("apt_output")(data));
