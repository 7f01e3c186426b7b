//! The `trousseau-proxy` command line: `run` (the default), `check-config`, `keys generate`, `dev`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use trousseau_proxy::config::{self, Flags};
#[cfg(feature = "dev")]
use trousseau_proxy::dev;
use trousseau_proxy::{identity, inject, server, session};

/// Authenticating reverse proxy that makes any web app a Trousseau single-sign-on app.
#[derive(Parser, Debug)]
#[command(name = "trousseau-proxy", version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args, Debug, Default)]
struct RunArgs {
    /// Configuration file (YAML).
    #[arg(long, short = 'c', env = "TROUSSEAU_PROXY_CONFIG")]
    config: Option<PathBuf>,
    /// Listen address (overrides `listen`).
    #[arg(long)]
    listen: Option<String>,
    /// Upstream URL (overrides `upstream`).
    #[arg(long)]
    upstream: Option<String>,
}

#[derive(clap::Args, Debug, Default)]
struct CheckArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Reach Trousseau (discovery, keys, client credentials, clock) and Redis, and print a
    /// checklist with a fix for each failure; exit status 2 when anything fails.
    #[arg(long)]
    probe: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the proxy (the default).
    Run(RunArgs),
    /// Validate the configuration and print it with secrets redacted; with --probe, also check
    /// it end to end (Trousseau's discovery, keys and client credentials, the clock, Redis).
    CheckConfig(CheckArgs),
    /// Key material.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Zero-config local run: the proxy plus an embedded Trousseau-compatible IdP with demo users.
    #[cfg(feature = "dev")]
    Dev(dev::DevArgs),
    /// Zero-config local run — not in this build (built without the `dev` feature).
    #[cfg(not(feature = "dev"))]
    Dev {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        args: Vec<String>,
    },
    /// Kubernetes mutating admission webhook (AdmissionReview v1 at POST /mutate) that injects the
    /// proxy as a sidecar into pods labelled trousseau.keysuite.app/inject=true.
    InjectWebhook(inject::WebhookArgs),
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Print a fresh session secret and an ES256 signing key (PKCS#8 PEM).
    Generate,
}

/// mimalloc instead of the system allocator: a proxied request allocates a few dozen small
/// buffers, and glibc's malloc/free were ~15% of its instructions (about a third with mimalloc).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

extern "C" {
    /// mimalloc's `mi_collect`: frees what the calling thread's heap holds and purges the pages
    /// whose purge delay has passed (`mimalloc.h`; linked with the allocator itself).
    fn mi_collect(force: bool);
}

/// mimalloc gives a thread's freed pages back to the system only from that thread's later
/// allocations in the same place: after a burst (thousands of streams, then none), an idle worker
/// kept ~100 MB it no longer used. The workers call this every few seconds
/// ([`trousseau_proxy::limits::on_release_memory`]).
fn release_memory() {
    // SAFETY: `mi_collect` has no preconditions; it only touches the allocator's own state for the
    // calling thread, and mimalloc is this program's allocator.
    unsafe { mi_collect(false) }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    trousseau_proxy::limits::on_release_memory(release_memory);
    init_logging(cli.log_format);
    // One thread is enough here: the proxy serves from its own thread-per-core workers
    // (`server::run`); this runtime only waits for signals and runs background tasks.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("trousseau-proxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        None => runtime.block_on(run(cli.run)),
        Some(Command::Run(args)) => runtime.block_on(run(args)),
        Some(Command::CheckConfig(args)) => runtime.block_on(check_config(args)),
        Some(Command::Keys { command: KeysCommand::Generate }) => {
            println!("# session.secrets entry (base64, 32 random bytes):");
            println!("{}", session::seal::generate_secret());
            println!();
            println!("# identity.signing_key_file content (ES256, PKCS#8 PEM):");
            print!("{}", identity::generate_pkcs8_pem());
            ExitCode::SUCCESS
        }
        #[cfg(not(feature = "dev"))]
        Some(Command::Dev { .. }) => {
            eprintln!(
                "trousseau-proxy dev: this build has no dev mode (built without the `dev` feature, as production \
                 images are); build with the default features to use it"
            );
            ExitCode::from(2)
        }
        #[cfg(feature = "dev")]
        Some(Command::Dev(args)) => runtime.block_on(async move {
            match dev::run(args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("trousseau-proxy dev: {e}");
                    ExitCode::FAILURE
                }
            }
        }),
        // inject-webhook (issue 7)
        Some(Command::InjectWebhook(args)) => runtime.block_on(async move {
            match inject::run(args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("trousseau-proxy inject-webhook: {e}");
                    ExitCode::FAILURE
                }
            }
        }),
    }
}

fn source(args: &RunArgs) -> config::ConfigSource {
    let flags = Flags { listen: args.listen.clone(), upstream: args.upstream.clone() };
    config::ConfigSource::of_process(args.config.clone(), flags)
}

fn load(args: &RunArgs) -> Result<(config::Settings, config::FileConfig), config::ConfigError> {
    source(args).load()
}

async fn run(args: RunArgs) -> ExitCode {
    if args.config.is_none() && std::env::vars().all(|(k, _)| !k.starts_with(config::ENV_PREFIX) || k == "TROUSSEAU_PROXY_LOG") {
        eprintln!("trousseau-proxy: no configuration. Use --config FILE, or try `trousseau-proxy dev` for a local demo.");
        return ExitCode::from(2);
    }
    let source = source(&args);
    let (settings, file) = match source.load() {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("trousseau-proxy: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    match server::run(settings, Some((source, file)), None).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trousseau-proxy: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn check_config(args: CheckArgs) -> ExitCode {
    let (settings, file) = match load(&args.run) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("trousseau-proxy: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    println!("# configuration is valid; effective values (secrets redacted):");
    print!("{}", config::redacted_yaml(&file));
    if !args.probe {
        return ExitCode::SUCCESS;
    }
    println!();
    println!("# probe: reaching what the configuration names");
    let checks = trousseau_proxy::probe::probe(&settings).await;
    for check in &checks {
        println!("{}", check.line());
    }
    let failed = checks.iter().filter(|c| !c.ok).count();
    if failed == 0 {
        println!("# all {} checks passed", checks.len());
        ExitCode::SUCCESS
    } else {
        println!("# {failed} of {} checks failed", checks.len());
        ExitCode::from(2)
    }
}

fn init_logging(format: LogFormat) {
    trousseau_proxy::logging::init(match format {
        LogFormat::Text => trousseau_proxy::logging::Format::Text,
        LogFormat::Json => trousseau_proxy::logging::Format::Json,
    });
}
