use clap::Parser;

fn main() -> std::process::ExitCode {
    shiplog::telemetry::init();
    let cli = shiplog::cli::Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("starting the async runtime");
    runtime.block_on(cli.run())
}
