#![no_main]
// The parsers of provision::fuzz's target "os_release".
libfuzzer_sys::fuzz_target!(|data: &[u8]| provision::fuzz::target("os_release")(data));
