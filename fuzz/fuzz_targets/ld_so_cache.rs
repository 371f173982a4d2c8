#![no_main]
// The parsers of provision::fuzz's target "ld_so_cache".
libfuzzer_sys::fuzz_target!(|data: &[u8]| provision::fuzz::target("ld_so_cache")(data));
