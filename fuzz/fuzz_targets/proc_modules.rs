#![no_main]
// The parsers of provision::fuzz's target "proc_modules".
libfuzzer_sys::fuzz_target!(|data: &[u8]| provision::fuzz::target("proc_modules")(data));
