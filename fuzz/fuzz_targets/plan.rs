#![no_main]
// The parsers of provision::fuzz's target "plan".
libfuzzer_sys::fuzz_target!(|data: &[u8]| provision::fuzz::target("plan")(data));
