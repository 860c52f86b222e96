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
    /// Follow this git repository: its branch's head is the deployed
    /// build, and the head's `servio.toml` sets the build's faults.
    #[arg(long, env = "SERVIO_SIM_REPO")]
    repo: Option<std::path::PathBuf>,
    /// The branch `--repo` deploys.
    #[arg(long, default_value = "main")]
    branch: String,
    /// Write an access log here.
    #[arg(long, env = "SERVIO_SIM_LOG")]
    log: Option<std::path::PathBuf>,
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
    if let Some(log) = &args.log {
        sim.log_to(log)?;
    }
    if let Some(repo) = args.repo {
        servio_sim::deployed::follow(
            sim.clone(),
            repo,
            args.branch,
            std::time::Duration::from_millis(250),
        );
    } else if args.log.is_some() {
        let sim = sim.clone();
        tokio::spawn(async move {
            loop {
                sim.tick();
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
        });
    }
    tracing::info!(%addr, "servio-sim listening");
    axum::serve(listener, servio_sim::router(sim)).await?;
    Ok(())
}
