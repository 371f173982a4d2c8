#![no_main]
// The parsers of provision::fuzz's target "rpm_query".
libfuzzer_sys::fuzz_target!(|data: &[u8]| provision::fuzz::target("rpm_query")(data));
