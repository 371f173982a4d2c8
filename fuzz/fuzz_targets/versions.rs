#![no_main]
// The parsers of provision::fuzz's target "versions".
libfuzzer_sys::fuzz_target!(|data: &[u8]| provision::fuzz::target("versions")(data));
