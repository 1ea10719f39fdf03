//! Run kubesim standalone: `cargo run -p kubesim --example sim -- [ADDR] [KUBECONFIG]`.

use std::net::SocketAddr;
use std::path::PathBuf;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args.next().unwrap_or_else(|| "127.0.0.1:0".into()).parse()?;
    let kubeconfig = args.next().map(PathBuf::from);
    let opts = kubesim::StandaloneOptions {
        listen,
        kubeconfig_out: kubeconfig,
        nodes: 2,
    };
    let signal = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    eprintln!("kubesim starting on {listen}");
    kubesim::run_standalone(opts, |c| c, signal).await?;
    Ok(())
}
