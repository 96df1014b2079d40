//! Topic names and connect/CLI parameters on arbitrary bytes; see
//! `roomhost::fuzzing::topic_and_params` for the properties.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| roomhost::fuzzing::topic_and_params(data));
