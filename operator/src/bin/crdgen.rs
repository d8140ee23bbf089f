//! `crdgen`: writes the CustomResourceDefinition to `crds/plamatio.io_plamatiostores.yaml` at the
//! repository root (or prints it with `--stdout`).

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let yaml = plamatio_operator::crdgen::crd_yaml()?;
    if std::env::args().any(|arg| arg == "--stdout") {
        print!("{yaml}");
        return Ok(());
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .ok_or_else(|| anyhow::anyhow!("the operator crate has no parent directory"))?;
    let path = root.join(plamatio_operator::crdgen::CRD_PATH);
    if let Some(directory) = path.parent() {
        std::fs::create_dir_all(directory)?;
    }
    std::fs::write(&path, yaml)?;
    println!("wrote {}", path.display());
    Ok(())
}
