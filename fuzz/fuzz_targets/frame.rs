//! The frame decoders (V1, V2, binary) and the JSON depth scan on arbitrary
//! bytes; see `roomhost::fuzzing::frame` for the properties.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| roomhost::fuzzing::frame(data));
