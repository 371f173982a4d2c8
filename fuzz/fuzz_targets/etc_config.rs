#![no_main]
// The parsers of provision::fuzz's target "etc_config".
libfuzzer_sys::fuzz_target!(|data: &[u8]| provision::fuzz::target("etc_config")(data));
