//! Writes the Sluice CRDs to `charts/sluice/crds/` (or the folder given as the only argument).

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let out = std::env::args_os()
        .nth(1)
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/sluice/crds"), PathBuf::from);
    std::fs::create_dir_all(&out)?;
    for (file, crd) in sluice_crds::crd_manifests::all() {
        let path = out.join(file);
        std::fs::write(&path, sluice_crds::crd_manifests::to_yaml(&crd)?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
