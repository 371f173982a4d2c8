#![no_main]
// The parsers of provision::fuzz's target "dpkg_status".
libfuzzer_sys::fuzz_target!(|data: &[u8]| provision::fuzz::target("dpkg_status")(data));
