#![no_main]
// The parsers of provision::fuzz's target "openpgp".
libfuzzer_sys::fuzz_target!(|data: &[u8]| provision::fuzz::target("openpgp")(data));
