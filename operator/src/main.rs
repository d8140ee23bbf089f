//! `plamatio-operator`: runs the controller, or renders a store's children, or prints the CRD.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    plamatio_operator::main_entry().await
}
