#![no_main]
// The parsers of provision::fuzz's target "dnf_output".
libfuzzer_sys::fuzz_target!(|data: &[u8]| provision::fuzz::target("dnf_output")(data));
