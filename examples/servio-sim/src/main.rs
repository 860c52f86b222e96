//! `servio-sim --listen 127.0.0.1:7070`: the demo platform for Remedy.

use clap::Parser;

#[derive(Parser)]
#[command(
    about = "A stand-in for the Servio platform: breakers, metrics, status pages, fault injection"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7070", env = "SERVIO_SIM_LISTEN")]
    listen: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    let addr = listener.local_addr()?;
    let sim = servio_sim::Sim::new(&format!("http://{addr}"));
    tracing::info!(%addr, "servio-sim listening");
    axum::serve(listener, servio_sim::router(sim)).await?;
    Ok(())
}
