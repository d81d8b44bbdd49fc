//! Any bytes given as a model file: `Model::from_bytes` returns a model or an error, never
//! panics, and never allocates what a header merely declares. A model it accepts writes back to
//! bytes that read as the same model.
#![no_main]

use libfuzzer_sys::fuzz_target;
use regop::io::model::Model;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.safetensors");
    if let Ok(m) = Model::from_bytes(path, data) {
        let params = m.flat_params();
        assert!(params.iter().all(|v| v.is_finite()));
        let bytes = m.to_bytes().expect("an accepted model writes back");
        let again = Model::from_bytes(path, &bytes).expect("written bytes read back");
        assert_eq!(again.flat_params(), params);
        assert_eq!(again.shape().dims, m.shape().dims);
    }
});
