//! The manifest loader: a file of a standalone gateway's `--config` folder, read by
//! `manifests::load_str` (`0`: as a `.yaml` file, `1`: as a `.json` one; the input's first
//! byte, then the file's text) and compiled as `load_and_compile` compiles a folder.
//!
//! Beyond not panicking: every configuration that validates survives the trip the operator
//! sends it on (its canonical JSON, parsed back by a gateway) unchanged and still valid.

#![no_main]

use std::path::Path;

use libfuzzer_sys::{Corpus, fuzz_target};
use sluice_crds::compile::{CompileOptions, compile};
use sluice_crds::config::GatewayConfig;
use sluice_crds::manifests::load_str;

fuzz_target!(|data: &[u8]| -> Corpus {
    let Some((mode, bytes)) = sluice_fuzz::mode(data, 2) else { return Corpus::Reject };
    // A folder's files are read as UTF-8 text; other bytes never reach the parser.
    let Ok(text) = std::str::from_utf8(bytes) else { return Corpus::Reject };
    let file = if mode == 0 { "fuzz.yaml" } else { "fuzz.json" };
    let Ok(manifests) = load_str(Path::new(file), text) else { return Corpus::Keep };
    let mut configs = Vec::new();
    if !manifests.objects.is_empty() {
        match compile(&manifests.objects, &CompileOptions::default()) {
            Ok(compiled) => configs = compiled,
            Err(errors) => assert!(!errors.0.is_empty(), "a failed compile names its problems"),
        }
    }
    configs.extend(manifests.compiled);
    for config in configs.iter().filter(|config| config.validate().is_ok()) {
        let canonical = match config.to_canonical_json() {
            Ok(bytes) => bytes,
            Err(e) => panic!("a valid configuration has no canonical JSON: {e}"),
        };
        let back: GatewayConfig = match serde_json::from_slice(&canonical) {
            Ok(back) => back,
            // Not the JSON itself: it holds the configuration's credentials.
            Err(e) => panic!("a gateway cannot read the canonical JSON back: {e}"),
        };
        if let Err(problems) = back.validate() {
            panic!("the configuration read back is invalid: {problems:?}");
        }
        // Compared without printing either side, for the same reason.
        assert!(back.to_canonical_json().ok() == Some(canonical), "the trip changed the configuration");
    }
    Corpus::Keep
});
