//! fid: FID (and KID) between files from any tool, as pytorch-fid's command line computes it.
//!
//!   fid A B --inception W.safetensors [--kid]   FID between two of: a folder of images, a
//!                                               samples .npz (arr_0), statistics (.npz with
//!                                               mu and sigma, or ctpipe's .safetensors), a
//!                                               precompute-encoder artifact (its statistics),
//!                                               an evaluate-fid artifact (its exported
//!                                               samples; ARTIFACT:MODEL-SAMPLER picks one)
//!   fid --save-stats SRC OUT.npz --inception W  pytorch-fid's statistics file of SRC
//!   --resize clean                              clean-fid's resize (PIL bicubic) instead
//!
//! The encoder is pytorch-fid's FID Inception-v3 from a safetensors file of its weights
//! (docs/fid.md says how to convert pytorch-fid's .pth once), or the encoder of a
//! `precompute-encoder` artifact (`--encoder KEY`: the in-domain classifier of Fashion-MNIST).
//! Statistics carry no encoder: comparing statistics of another encoder gives a number that
//! means nothing, which no file format here can detect.

use anyhow::{bail, Result};
use clap::Parser;
use ctpipe::error::usage;
use ctpipe::evaluate::fid_files::{self, Source};
use ctpipe::features::Encoder;
use ctpipe::metrics::kid::{kid, KidConfig};
use ctpipe::metrics::stats::FeatureStats;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "fid",
    version,
    about = "FID and KID between folders of images, samples .npz files and statistics (pytorch-fid's conventions)",
    after_help = "Examples:\n  fid samples/ reference.npz --inception data/fid_inception.safetensors\n  fid --save-stats train-images/ train-stats.npz --inception data/fid_inception.safetensors\n  fid a.npz b.npz --encoder 3f2a --kid"
)]
struct Cli {
    /// Two sources (FID between them), or with --save-stats the source and the .npz to write
    #[arg(num_args = 2, required = true, value_names = ["A", "B"])]
    paths: Vec<PathBuf>,
    /// Write pytorch-fid's statistics (.npz: mu, sigma) of the first path to the second
    #[arg(long)]
    save_stats: bool,
    /// pytorch-fid's FID Inception-v3 weights, as safetensors (docs/fid.md)
    #[arg(long, value_name = "FILE")]
    inception: Option<PathBuf>,
    /// The sha256 the Inception weights must have
    #[arg(long, value_name = "HEX", requires = "inception")]
    inception_sha256: Option<String>,
    /// A precompute-encoder artifact (key, prefix or stage/key) whose encoder to use instead
    #[arg(long, value_name = "ARTIFACT", conflicts_with = "inception")]
    encoder: Option<String>,
    /// The artifact store (for --encoder)
    #[arg(long, env = "CTPIPE_ARTIFACTS", default_value = "artifacts")]
    artifacts: PathBuf,
    /// How images reach 299×299: pytorch-fid's (bilinear inside the network, x/255·2−1) or
    /// clean-fid's (PIL bicubic per channel, then (x−128)/128)
    #[arg(long, value_enum, default_value = "pytorch-fid")]
    resize: fid_files::Resize,
    /// Images per encoder batch
    #[arg(long, default_value_t = 50)]
    batch: usize,
    /// Also KID (needs images on both sides): mean ± std over subsets
    #[arg(long)]
    kid: bool,
    /// KID: number of random subsets
    #[arg(long, default_value_t = 100)]
    kid_subsets: usize,
    /// KID: largest subset size
    #[arg(long, default_value_t = 1000)]
    kid_subset_size: usize,
    /// KID: seed of the subset draws
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Compute device: cpu, cuda, cuda:N or auto
    #[arg(long, default_value = "cpu")]
    device: String,
}

fn main() -> ExitCode {
    ctpipe::error::install_panic_hook();
    let cli = Cli::parse();
    ctpipe::error::exit_code("fid", run(cli))
}

fn encoder(cli: &Cli, device: &candle_core::Device) -> Result<Box<dyn Encoder>> {
    use ctpipe::features::{inception::FidInception, weights};
    match (&cli.inception, &cli.encoder) {
        (Some(path), _) => match &cli.inception_sha256 {
            Some(sha) => {
                let src = weights::WeightsSource { path: Some(path.clone()), repo: None, file: None, revision: "main".into(), sha256: sha.clone() };
                Ok(Box::new(FidInception::load(&src.resolve(&weights::INCEPTION)?, device)?))
            }
            None => Ok(Box::new(FidInception::load(path, device)?)),
        },
        (None, Some(_)) if cli.resize == fid_files::Resize::Clean => Err(usage("--resize clean brings images to the Inception network's 299×299; give --inception FILE, not --encoder")),
        (None, Some(what)) => {
            let store = ctpipe::store::Store::new(&cli.artifacts);
            let (stage, key) = store.resolve(what)?;
            if stage != "precompute-encoder" {
                return Err(usage(format!("--encoder {what}: a {stage} artifact; expected a precompute-encoder one")));
            }
            Ok(ctpipe::features::open(&store.open(&stage, &key, ctpipe::store::Verify::Content)?, device)?.1)
        }
        (None, None) => Err(usage("images need an encoder: --inception FILE (pytorch-fid's weights as safetensors, docs/fid.md) or --encoder ARTIFACT")),
    }
}

/// A source by path, or else an artifact of the store (key, prefix, stage/key or .ref file): a
/// precompute-encoder artifact stands for its reference statistics (`stats.safetensors`), an
/// evaluate-fid artifact for the samples it exported (`export_samples = true`), one of them
/// chosen by `ARTIFACT:MODEL-SAMPLER` when there are several.
fn open(cli: &Cli, path: &std::path::Path) -> Result<Source> {
    if path.exists() {
        return Source::open(path);
    }
    let store = ctpipe::store::Store::new(&cli.artifacts);
    let what = path.to_string_lossy();
    let (spec, pick) = match store.resolve(&what) {
        Ok(found) => (found, None),
        Err(_) => match what.rsplit_once(':') {
            Some((art, pick)) => match store.resolve(art) {
                Ok(found) => (found, Some(pick)),
                Err(_) => return Source::open(path),
            },
            None => return Source::open(path),
        },
    };
    let (stage, key) = spec;
    let art = store.open(&stage, &key, ctpipe::store::Verify::Content)?;
    match (stage.as_str(), pick) {
        ("precompute-encoder", None) => Ok(Source::Stats(FeatureStats::load(&art.file("stats.safetensors")?)?)),
        ("precompute-encoder", Some(p)) => Err(usage(format!("{what}: a precompute-encoder artifact stands for its statistics; `:{p}` picks nothing in it"))),
        ("evaluate-fid", _) => Source::open(&art.file(&fid_files::exported_samples(&art, pick)?)?),
        _ => Err(usage(format!(
            "{what}: a {stage} artifact; as a source, give a precompute-encoder artifact (its reference statistics), an evaluate-fid one (its exported samples, ARTIFACT:MODEL-SAMPLER) or a file"
        ))),
    }
}

/// Statistics of a source, and its features when it is images (for KID).
fn measure(cli: &Cli, src: Source, enc: &mut Option<Box<dyn Encoder>>, device: &candle_core::Device, what: &str) -> Result<(FeatureStats, Option<Vec<f32>>)> {
    match src {
        Source::Stats(s) => Ok((s, None)),
        Source::Images(im) => {
            if enc.is_none() {
                *enc = Some(encoder(cli, device)?);
            }
            let e = enc.as_deref().expect("set above");
            let mut bar = ctpipe::progress::Progress::new(&format!("fid: features of {what}"), im.n as u64);
            let f = fid_files::features(e, &im, cli.resize, cli.batch, device, |done| bar.set_position(done as u64))?;
            bar.finish();
            Ok((fid_files::stats_of(&f, e.dim())?, Some(f)))
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let device = ctpipe::device::select(&cli.device)?;
    if cli.batch == 0 {
        return Err(usage("--batch: expected at least 1"));
    }
    let (a, b) = (&cli.paths[0], &cli.paths[1]);
    let mut enc = None;
    if cli.save_stats {
        let src = open(&cli, a)?;
        eprintln!("fid: {}: {}", a.display(), src.describe());
        let (stats, _) = measure(&cli, src, &mut enc, &device, &a.display().to_string())?;
        fid_files::save_stats_npz(&stats, b)?;
        println!("statistics of {} features written to {}", stats.dim(), b.display());
        return Ok(());
    }
    let (sa, sb) = (open(&cli, a)?, open(&cli, b)?);
    if cli.resize == fid_files::Resize::Clean && (matches!(sa, Source::Stats(_)) || matches!(sb, Source::Stats(_))) {
        return Err(usage("--resize clean needs images on both sides: statistics carry no record of how their images were resized, and clean-fid's against pytorch-fid's give a number that means nothing"));
    }
    eprintln!("fid: {}: {}\nfid: {}: {}", a.display(), sa.describe(), b.display(), sb.describe());
    if cli.kid && (matches!(sa, Source::Stats(_)) || matches!(sb, Source::Stats(_))) {
        return Err(usage("--kid needs images on both sides (KID is computed from features, not statistics)"));
    }
    let (stats_a, fa) = measure(&cli, sa, &mut enc, &device, &a.display().to_string())?;
    let (stats_b, fb) = measure(&cli, sb, &mut enc, &device, &b.display().to_string())?;
    if stats_a.dim() != stats_b.dim() {
        bail!("{} has {}-d statistics, {} {}-d: they come from different encoders", a.display(), stats_a.dim(), b.display(), stats_b.dim());
    }
    let fid = ctpipe::metrics::frechet::frechet_distance(&stats_a, &stats_b)?;
    // pytorch-fid prints `FID:  <value>`; the same line, so scripts that parse it keep working.
    println!("FID:  {fid}");
    if let (true, Some(fa), Some(fb)) = (cli.kid, fa, fb) {
        let k = kid(&fa, &fb, stats_a.dim(), KidConfig { subsets: cli.kid_subsets, max_subset_size: cli.kid_subset_size, seed: cli.seed })?;
        println!("KID:  {} ± {} ({} subsets of {})", k.mean, k.std, cli.kid_subsets, k.subset_size);
    }
    Ok(())
}
