//! The `cortexmap` command line: parse arguments, set up logging and progress,
//! call the library, map errors to exit codes (1 bad input, 2 internal).

use clap::{Args, Parser, Subcommand};
use cortexmap::config::load_params;
use cortexmap::error::{Error, Result};
use cortexmap::pipeline::{self, Stage};
use cortexmap::progress::Progress;
use cortexmap::simulate::{self, Indicator, Overrides, SimConfig};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;

/// Longitudinal two-photon calcium imaging: raw TIFF stacks to Parquet tables,
/// with a ground-truth simulator.
#[derive(Parser)]
#[command(name = "cortexmap", version, about, long_about = None)]
struct Cli {
    /// More log output (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Simulate the demo experiment (256x256, 180 cells, 7 sessions, 15 cells
    /// ablated), run every stage on it, write the report and print the story.
    Demo {
        /// Output folder (the experiment goes to OUT/experiment, the run to OUT/run).
        #[arg(long)]
        out: PathBuf,
        /// Random seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Replace OUT/experiment if it holds an earlier simulation.
        #[arg(long)]
        overwrite: bool,
    },
    /// Simulate a longitudinal ablation experiment with ground truth.
    ///
    /// Writes an experiment as CONTRACT.md describes it (experiment.toml, int16 TIFF
    /// stacks and stimuli.csv per session, ablation_targets.csv, cell_types.csv) and a
    /// truth/ folder of Parquet tables. Presets: sample (64x64, seconds), demo
    /// (256x256, what `demo` runs), standard
    /// (512x512, ~400 cells, 7 sessions), and the cohorts control, ablate-responsive,
    /// ablate-silent, ablate-inhibitory at standard size.
    Simulate(SimulateArgs),
    /// Run the pipeline on an experiment (stages: ingest, motion, detect, extract,
    /// track, analyze).
    Run {
        /// The experiment's manifest (experiment.toml).
        manifest: PathBuf,
        /// Run folder for the output tables.
        #[arg(long)]
        out: PathBuf,
        /// Parameter file (see pipeline/default.toml); defaults when absent.
        #[arg(long)]
        params: Option<PathBuf>,
        /// Stop after this stage (ingest, motion, detect, extract, track, analyze).
        #[arg(long)]
        until: Option<String>,
        /// Rerun from this stage even if nothing changed: 'detect' reuses the
        /// motion-corrected frames and tables an earlier run left in --out; 'track'
        /// reuses its ROIs and images; 'analyze' its tracked cells and traces.
        /// Without it, a rerun skips the parts whose inputs, parameters and
        /// outputs are unchanged (run.json keeps their content hashes).
        #[arg(long)]
        from: Option<String>,
    },
    /// Score a run against a simulated experiment's truth: motion, ROIs and
    /// traces, tracking and tags (whatever the run has).
    Score {
        /// The simulated experiment (or its truth/ folder).
        #[arg(long, required_unless_present = "regions", conflicts_with = "regions")]
        truth: Option<PathBuf>,
        /// Labelled ROIs in neurofinder's JSON format (a list of
        /// {"coordinates": [[row, col], ...]}), scored by neurofinder's rule.
        #[arg(long)]
        regions: Option<PathBuf>,
        /// With --regions: the session to score (default: the first).
        #[arg(long, requires = "regions")]
        session: Option<String>,
        /// With --regions: largest centroid distance of a match, px.
        #[arg(long, default_value_t = 5.0, requires = "regions")]
        max_dist: f64,
        /// The run folder.
        #[arg(long)]
        run: PathBuf,
    },
    /// Aggregate many experiments' runs: per-mouse means of the per-FOV,
    /// baseline-normalised measures and the cohort statistics (study_map.parquet,
    /// study_neurons.parquet, study_stats.parquet).
    Study {
        /// The study file (study.toml).
        study: PathBuf,
        /// Output folder for the study tables.
        #[arg(long)]
        out: PathBuf,
        /// Label shuffles per permutation test against control.
        #[arg(long, default_value_t = 10_000)]
        permutations: usize,
        /// Seed of the permutation tests.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Distance bins of study_spatial.parquet, µm: MIN,MAX,WIDTH
        /// (SCIENCE.md §5.4; default 15,350,25, the defaults of [analysis]
        /// spatial_min_um, spatial_max_um and spatial_bin_um).
        #[arg(long)]
        distance_bins: Option<String>,
    },
    /// Simulate a study: experiments for several mice x FOVs in each of the four
    /// cohorts, study.toml naming them, and the study-level truth
    /// (truth/study_map.parquet). Presets: small (2 mice x 1 FOV per cohort,
    /// 128x128), standard (4 mice x 2 FOVs, demo-sized FOVs).
    SimulateStudy {
        #[arg(long, default_value = "small")]
        preset: String,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Mice per cohort (overrides the preset).
        #[arg(long)]
        mice: Option<usize>,
        /// FOVs per mouse (overrides the preset).
        #[arg(long)]
        fovs: Option<usize>,
        #[arg(long)]
        out: PathBuf,
        /// Replace earlier simulations in OUT.
        #[arg(long)]
        overwrite: bool,
    },
    /// Write report.html (figures of every stage) into a run folder; `run` writes
    /// it too.
    Report {
        /// The run folder.
        #[arg(long)]
        run: PathBuf,
    },
    /// Check an experiment manifest (or a study.toml) without running anything.
    Check {
        /// experiment.toml or study.toml
        file: PathBuf,
    },
    /// Print what a TIFF file holds: pages, shape, dtype, ScanImage metadata.
    Inspect {
        /// The TIFF file.
        file: PathBuf,
    },
    /// Track cells across sessions given only their spatial footprints (e.g. from
    /// another extraction tool): align the sessions, match the cells, write
    /// cells.parquet, alignment.parquet and track_pairs.parquet into OUT.
    TrackFootprints {
        /// Footprint files, one per session, in session order (JSON: {height, width,
        /// cells: [{coordinates: [[row, col], ...], weights: [...]}]}).
        #[arg(required = true, num_args = 2..)]
        files: Vec<PathBuf>,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// The reference session, as a position in FILES (1 = the first).
        #[arg(long, default_value_t = 1)]
        reference: usize,
        /// Parameter file ([track] section; see pipeline/default.toml).
        #[arg(long)]
        params: Option<PathBuf>,
    },
    /// Benchmarks (speed figures, not tests).
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
}

#[derive(Args)]
struct SimulateArgs {
    /// Preset: sample, standard, control, ablate-responsive, ablate-silent, ablate-inhibitory.
    #[arg(long, default_value = "sample")]
    preset: String,
    /// Random seed; the same seed gives the same bytes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output folder for the experiment.
    #[arg(long)]
    out: PathBuf,
    /// Frames per session (the number of repetitions is fitted to it).
    #[arg(long)]
    frames: Option<usize>,
    /// Frame size: N (square) or WxH.
    #[arg(long, value_parser = parse_size)]
    size: Option<(usize, usize)>,
    /// Number of cells.
    #[arg(long)]
    cells: Option<usize>,
    /// Cohort: control, ablate-responsive, ablate-silent, ablate-inhibitory.
    #[arg(long)]
    cohort: Option<String>,
    /// Indicator: 6s, 6m or 6f.
    #[arg(long, value_parser = parse_indicator)]
    indicator: Option<Indicator>,
    /// Repetitions of each stimulus per session.
    #[arg(long)]
    repetitions: Option<usize>,
    /// Number of ablation targets.
    #[arg(long)]
    ablate: Option<usize>,
    /// Also write a structural (nuclear) channel, interleaved with the functional one.
    #[arg(long)]
    structural: bool,
    /// Add a smooth nonrigid warp to the rigid motion.
    #[arg(long)]
    nonrigid: bool,
    /// Replace OUT if it holds an earlier simulation.
    #[arg(long)]
    overwrite: bool,
    /// Write only the model's truth tables into OUT/truth, no movie (fast; for
    /// studying the model; OUT is then not an experiment).
    #[arg(long)]
    truth_only: bool,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// TIFF decoding speed against reading the same bytes raw (like `cat`).
    TiffRead {
        file: PathBuf,
        #[arg(long, default_value_t = 3)]
        repeats: usize,
    },
    /// Motion-correction throughput on a synthetic int16 movie, beside the FFT
    /// bound, with the process's peak memory.
    Motion {
        /// Frame side, px.
        #[arg(long, default_value_t = 512)]
        size: usize,
        /// Frames in the movie.
        #[arg(long, default_value_t = 2000)]
        frames: usize,
        /// Also time rigid + piecewise-rigid registration.
        #[arg(long)]
        nonrigid: bool,
        /// Scratch folder (its files are removed afterwards).
        #[arg(long)]
        out: PathBuf,
    },
    /// Simulator throughput (frames rendered and written per second).
    Simulate {
        #[arg(long, default_value = "standard")]
        preset: String,
        /// Frames per session (default: the preset's).
        #[arg(long)]
        frames: Option<usize>,
        /// Scratch folder (removed afterwards).
        #[arg(long)]
        out: PathBuf,
    },
}

fn parse_size(s: &str) -> std::result::Result<(usize, usize), String> {
    let parse = |t: &str| {
        t.trim()
            .parse::<usize>()
            .map_err(|_| format!("'{s}' is not N or WxH"))
    };
    match s.split_once(['x', 'X']) {
        Some((w, h)) => Ok((parse(w)?, parse(h)?)),
        None => {
            let n = parse(s)?;
            Ok((n, n))
        }
    }
}

fn parse_indicator(s: &str) -> std::result::Result<Indicator, String> {
    Indicator::parse(s).ok_or_else(|| format!("unknown indicator '{s}' (6s, 6m or 6f)"))
}

/// Progress on a terminal: an indicatif bar; elsewhere: a log line per unit of work.
struct CliProgress {
    bar: Mutex<Option<ProgressBar>>,
    terminal: bool,
}

impl CliProgress {
    fn new(quiet: bool) -> Self {
        CliProgress {
            bar: Mutex::new(None),
            terminal: !quiet && std::io::stderr().is_terminal(),
        }
    }
}

impl Progress for CliProgress {
    fn start(&self, label: &str, total: u64) {
        tracing::info!("{label}: {total} steps");
        if self.terminal {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} ({per_sec}, {eta})")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_message(label.to_string());
            *self.bar.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar);
        }
    }
    fn advance(&self, n: u64) {
        if let Some(b) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            b.inc(n);
        }
    }
    fn finish(&self) {
        if let Some(b) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).take() {
            b.finish_and_clear();
        }
        tracing::info!("done");
    }
}

fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => tracing::Level::ERROR,
        (false, 0) => tracing::Level::WARN,
        (false, 1) => tracing::Level::INFO,
        _ => tracing::Level::DEBUG,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn simulate_cmd(a: &SimulateArgs, progress: &dyn Progress) -> Result<()> {
    let mut cfg = SimConfig::preset(&a.preset)?;
    cfg.apply(&Overrides {
        size: a.size,
        cells: a.cells,
        frames: a.frames,
        cohort: a.cohort.clone(),
        indicator: a.indicator,
        repetitions: a.repetitions,
        n_ablate: a.ablate,
        structural: a.structural,
        nonrigid: a.nonrigid,
    })?;
    let s = if a.truth_only {
        simulate::simulate_truth_only(&cfg, a.seed, &a.out)?
    } else {
        simulate::simulate(&cfg, a.seed, &a.out, a.overwrite, progress)?
    };
    print_simulation(&s, !a.truth_only);
    Ok(())
}

fn print_simulation(s: &simulate::Summary, movie: bool) {
    if movie {
        println!("experiment: {}", s.manifest.display());
    }
    println!("truth:      {}", s.out.join("truth").display());
    println!(
        "{} sessions, {} frames, {} cells, {} ablated; {:.0}% responsive before the ablation; {:.0} frames/s",
        s.sessions,
        s.frames,
        s.cells,
        s.targets,
        100.0 * s.responsive_fraction_pre,
        if movie { s.frames_per_second } else { f64::NAN }
    );
    let diag: Vec<String> = s
        .diagonal_norm
        .iter()
        .map(|(id, v)| format!("{id} {v:.2}"))
        .collect();
    println!(
        "true map diagonal (baseline-normalised): {}",
        diag.join(", ")
    );
}

/// A part of a run, by its restart stage, as the user knows it.
fn part_name(p: Stage) -> &'static str {
    match p {
        Stage::Ingest | Stage::Motion => "ingest+motion",
        Stage::Detect | Stage::Extract => "detect+extract",
        Stage::Track => "track",
        Stage::Analyze => "analyze",
    }
}

fn run_cmd(
    manifest: &Path,
    out: &Path,
    params: Option<&Path>,
    until: Option<&str>,
    from: Option<&str>,
    progress: &dyn Progress,
) -> Result<()> {
    let params = load_params(params)?;
    let until = until.map(Stage::parse).transpose()?;
    let from = from.map(Stage::parse).transpose()?;
    let s = pipeline::run(manifest, out, &params, until, from, progress)?;
    if !s.skipped.is_empty() {
        let parts: Vec<&str> = s.skipped.iter().map(|p| part_name(*p)).collect();
        println!(
            "unchanged since the last run in {}, skipped: {}",
            out.display(),
            parts.join(", ")
        );
    }
    for sess in &s.sessions {
        println!(
            "{}: day {}, {} frames of {}x{} at {} Hz",
            sess.id, sess.day, sess.n_frames, sess.width, sess.height, sess.fs
        );
    }
    for (id, n, cells, diameter) in &s.detection {
        println!("{id}: {n} ROIs, {cells} of them is_cell (cell diameter {diameter:.1} px)");
    }
    if let Some(t) = &s.tracking {
        let ids: Vec<String> = s.sessions.iter().map(|x| x.id.clone()).collect();
        print_tracking(&ids, t);
    }
    if let Some(a) = &s.analysis {
        print_analysis(a);
    }
    for t in &s.tables {
        println!("wrote {}", t.display());
    }
    Ok(())
}

/// `--distance-bins MIN,MAX,WIDTH`.
fn parse_distance_bins(text: &str) -> Result<cortexmap::analysis::spatial::DistanceBins> {
    let bad = |why: &str| {
        Error::usage(format!(
            "--distance-bins {text}: {why}; expected MIN,MAX,WIDTH in µm, e.g. 15,350,25"
        ))
    };
    let v: Vec<f64> = text
        .split(',')
        .map(|x| x.trim().parse::<f64>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| bad("not three numbers"))?;
    let [min_um, max_um, width_um] = v[..] else {
        return Err(bad("not three numbers"));
    };
    let bins = cortexmap::analysis::spatial::DistanceBins {
        min_um,
        max_um,
        width_um,
    };
    bins.check().map_err(|why| bad(&why))?;
    Ok(bins)
}

/// How the run's cohort × day means of map measure `j` agree with the truth's:
/// the median and largest relative error and how many are within 10 %.
fn truth_agreement(
    truth: &std::collections::BTreeMap<(String, i32), [f64; 3]>,
    run: &std::collections::BTreeMap<(String, i32), [f64; 3]>,
    j: usize,
    name: &str,
) -> String {
    let mut errors: Vec<(f64, String)> = truth
        .iter()
        .filter_map(|(k, tv)| {
            let e = (run.get(k)?[j] - tv[j]).abs() / tv[j].abs().max(1e-9);
            e.is_finite().then(|| (e, format!("{} day {}", k.0, k.1)))
        })
        .collect();
    if errors.is_empty() {
        return format!("{name}: no finite value");
    }
    errors.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = errors.len();
    let median = if n % 2 == 1 {
        errors[n / 2].0
    } else {
        0.5 * (errors[n / 2 - 1].0 + errors[n / 2].0)
    };
    let within = errors.iter().filter(|e| e.0 <= 0.10).count();
    let worst = &errors[n - 1];
    format!(
        "{name}: median {:.1}%, {within} of {n} within 10%, largest {:.1}% at {}",
        100.0 * median,
        100.0 * worst.0,
        worst.1
    )
}

fn study_cmd(
    study: &Path,
    out: &Path,
    (permutations, seed, distance_bins): (usize, u64, cortexmap::analysis::spatial::DistanceBins),
    progress: &dyn Progress,
) -> Result<()> {
    let st = cortexmap::config::load_study(study)?;
    let opts = cortexmap::study::StudyOptions {
        permutations,
        seed,
        distance_bins,
    };
    let s = cortexmap::study::run_study(&st, out, &opts, progress)?;
    let report = cortexmap::report::write_study_report(out)?;
    let mice: Vec<String> = s.mice.iter().map(|(c, n)| format!("{c} {n}")).collect();
    println!(
        "{} experiments; mice per cohort: {}; days {:?}",
        s.experiments,
        mice.join(", "),
        s.days
    );
    for n in &s.notes {
        println!("note: {n}");
    }
    println!("normalised map diagonal/off-diagonal, mean over mice:");
    let mut cohort = None;
    let mut line = String::new();
    for (c, d, dg, od) in &s.map_means {
        if cohort != Some(*c) {
            if !line.is_empty() {
                println!("{line}");
            }
            line = format!("  {c:<18}");
            cohort = Some(*c);
        }
        line.push_str(&format!(" d{d} {dg:.2}/{od:.2}"));
    }
    println!("{line}");
    let sig: Vec<String> = s
        .stats
        .iter()
        .filter(|r| r.p_fdr < 0.05 && r.measure == "diagonal" && r.test != "anova_days")
        .map(|r| {
            format!(
                "{} {} day {} (p_fdr {:.3})",
                r.cohort,
                r.test,
                r.day.map_or("all".to_string(), |d| d.to_string()),
                r.p_fdr
            )
        })
        .collect();
    println!(
        "diagonal, significant (FDR < 0.05): {}",
        if sig.is_empty() {
            "none".into()
        } else {
            sig.join("; ")
        }
    );
    let truth = st
        .path
        .parent()
        .unwrap_or(Path::new("."))
        .join("truth")
        .join("study_map.parquet");
    if truth.exists() {
        let t = cortexmap::study::cohort_map_means(&truth)?;
        let r = cortexmap::study::cohort_map_means(&s.tables[0])?;
        let parts: Vec<String> = ["diagonal", "off-diagonal"]
            .iter()
            .enumerate()
            .map(|(j, name)| truth_agreement(&t, &r, j, name))
            .collect();
        println!(
            "against the study truth ({}), relative errors of the cohort × day means of the \
             normalised map: {}",
            truth.display(),
            parts.join("; ")
        );
    }
    for t in &s.tables {
        println!("wrote {}", t.display());
    }
    println!("wrote {}", report.display());
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn simulate_study_cmd(
    preset: &str,
    seed: u64,
    mice: Option<usize>,
    fovs: Option<usize>,
    out: &Path,
    overwrite: bool,
    progress: &dyn Progress,
) -> Result<()> {
    let mut p = simulate::study::StudyPreset::preset(preset)?;
    if let Some(m) = mice {
        p.mice_per_cohort = m;
    }
    if let Some(f) = fovs {
        p.fovs_per_mouse = f;
    }
    let s = simulate::study::simulate_study(&p, seed, out, overwrite, progress)?;
    let st = cortexmap::config::load_study(&s.study_file)?;
    let truth = cortexmap::study::write_map_truth(&st, &out.join("truth"))?;
    println!(
        "{} experiments ({} mice x {} FOVs per cohort, 4 cohorts)",
        s.experiments.len(),
        p.mice_per_cohort,
        p.fovs_per_mouse
    );
    println!("study:       {}", s.study_file.display());
    println!("study truth: {}", truth.display());
    println!(
        "next: cortexmap run EXPERIMENT --out RUN for each (or snakemake -s pipeline/Snakefile), then cortexmap study {} --out DIR",
        s.study_file.display()
    );
    Ok(())
}

fn report_cmd(run: &Path) -> Result<()> {
    let path = cortexmap::report::write_report(run)?;
    println!("{}", cortexmap::report::story(run)?.text());
    println!("wrote {}", path.display());
    Ok(())
}

fn print_analysis(a: &pipeline::analyze::AnalysisSummary) {
    for w in &a.warnings {
        println!("note: {w}");
    }
    let resp: Vec<String> = a
        .sessions
        .iter()
        .map(|(id, n, f)| format!("{id} {:.0}% of {n}", 100.0 * f))
        .collect();
    println!("responsive cells: {}", resp.join(", "));
    if let Some(r) = &a.reference {
        println!(
            "groups A/B/C from session {r}; {} spared cells in the maps; {} traces left out \
             (neuropil-corrected baseline under [analysis] min_f0_fraction of F, or noise over \
             max_noise_ratio times the session's median)",
            a.n_spared, a.n_unreliable
        );
    }
    let maps: Vec<String> = a
        .maps
        .iter()
        .map(|(id, d, o)| format!("{id} {d:.2}/{o:.2}"))
        .collect();
    if maps.is_empty() {
        println!("no maps: fewer than 2 spared cells were found in every session");
    } else {
        println!(
            "map diagonal/off-diagonal, baseline-normalised: {}",
            maps.join(", ")
        );
    }
}

fn track_footprints_cmd(
    files: &[PathBuf],
    out: &Path,
    reference: usize,
    params: Option<&Path>,
    progress: &dyn Progress,
) -> Result<()> {
    let params = load_params(params)?;
    if reference == 0 {
        return Err(Error::usage("--reference counts from 1"));
    }
    let started = std::time::Instant::now();
    let (sessions, t) =
        pipeline::track::track_footprint_files(files, reference - 1, out, &params, progress)?;
    for s in &sessions {
        println!(
            "{}: {} footprints, {}x{} px",
            s.id,
            s.rois.len(),
            s.width,
            s.height
        );
    }
    let ids: Vec<String> = sessions.iter().map(|s| s.id.clone()).collect();
    print_tracking(&ids, &t);
    println!("tracked in {:.2} s", started.elapsed().as_secs_f64());
    for name in ["cells", "alignment", "track_pairs", "rois_ref"] {
        println!("wrote {}", out.join(format!("{name}.parquet")).display());
    }
    Ok(())
}

fn print_tracking(sessions: &[String], t: &cortexmap::track::Tracking) {
    println!("alignment to the reference (px, degrees; pairs of cell centroids, residual):");
    for (s, a) in sessions.iter().zip(&t.alignments) {
        let m = &a.transform;
        println!(
            "  {:<6} dx {:>7.2} dy {:>7.2} rot {:>6.2} scale {:.4}  {:>4} pairs ({:>3.0}%), residual {:.2}, image r {:.2}",
            s,
            m.m[0][2],
            m.m[1][2],
            m.rotation_deg(),
            m.scale(),
            a.n_pairs,
            100.0 * a.paired_fraction,
            a.residual_px,
            a.image_corr
        );
    }
    let n = sessions.len();
    let mut hist = vec![0usize; n + 1];
    for c in &t.cells {
        hist[c.rois.iter().flatten().count()] += 1;
    }
    let spread: Vec<String> = (1..=n).map(|k| format!("{k}: {}", hist[k])).collect();
    let targeted = t.cells.iter().filter(|c| c.tags.target.is_some()).count();
    let ablated = t.cells.iter().filter(|c| c.tags.ablated()).count();
    let filled = t
        .cells
        .iter()
        .filter(|c| c.tags.outcome == Some(cortexmap::track::tags::Outcome::Filled))
        .count();
    println!(
        "{} tracked cells (gate {:.1} px, P(same) model {}); cells by sessions present: {}",
        t.cells.len(),
        t.gate_px,
        if t.model.fitted { "fitted" } else { "fallback" },
        spread.join(", ")
    );
    if targeted > 0 {
        println!(
            "ablation targets on tracked cells: {targeted}; ablated {ablated} ({filled} of them still \
             fluorescent without signal, {} never detected as a ROI)",
            hist[0]
        );
    }
}

fn regions_cmd(regions: &Path, run: &Path, session: Option<&str>, max_dist: f64) -> Result<()> {
    let s = cortexmap::score::cells::score_regions(regions, run, session, max_dist)?;
    println!(
        "session {}: {} labelled ROIs; matches are one-to-one with centroids within {max_dist} px",
        s.session, s.n_true
    );
    println!("  ROIs                 est  match  precision  recall     F1");
    for (name, (n, m, p, r, f)) in [
        ("is_cell", s.cells),
        ("is_cell, activity", s.active_cells),
        ("all", s.all),
    ] {
        println!("  {name:<18} {n:>5} {m:>6} {p:>10.3} {r:>7.3} {f:>6.3}");
    }
    Ok(())
}

fn score_cmd(truth: &Path, run: &Path) -> Result<()> {
    let s = cortexmap::score::score(truth, run)?;
    println!("motion (px; one constant offset per session removed):");
    println!("  session  frames   rmse  rmse_x  rmse_y  max_err  field_rmse  field_static_removed");
    let opt = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into());
    for m in &s.motion {
        println!(
            "  {:<7} {:>7} {:>6.3} {:>7.3} {:>7.3} {:>8.3}  {:<10}  {}",
            m.session,
            m.frames,
            m.rmse,
            m.rmse_x,
            m.rmse_y,
            m.max_error,
            opt(m.field_rmse),
            opt(m.field_rmse_static),
        );
    }
    println!(
        "wrote {}",
        run.join("score").join("motion.parquet").display()
    );
    if let Some(cells) = &s.cells {
        println!(
            "ROIs (is_cell; centroid <= 4 px and IoU >= 0.2, one-to-one) and traces (Pearson r; \
             ceiling: the largest r the ROI's ΔF/F noise allows):"
        );
        println!(
            "  session  true   est  match  precision  recall     F1  F1(all)  dff_r  \
             ceiling  denoised_r  spike_r"
        );
        for c in cells {
            println!(
                "  {:<7} {:>5} {:>5} {:>6} {:>10.3} {:>7.3} {:>6.3} {:>8.3} {:>6.3} {:>8.3} {:>11.3} {:>8.3}",
                c.session,
                c.n_true,
                c.n_est,
                c.n_matched,
                c.precision,
                c.recall,
                c.f1,
                c.f1_all,
                c.trace_corr_median,
                c.trace_corr_ceiling_median,
                c.denoised_corr_median,
                c.spike_corr_median
            );
        }
        println!(
            "wrote {}",
            run.join("score").join("cells.parquet").display()
        );
    }
    if let Some(a) = &s.analysis {
        print_analysis_score(a);
        for name in ["responsive", "maps", "cell_tags"] {
            println!(
                "wrote {}",
                run.join("score").join(format!("{name}.parquet")).display()
            );
        }
    }
    if let Some(t) = &s.tracking {
        print_track_score(t);
        for name in ["tracking", "tags", "alignment"] {
            println!(
                "wrote {}",
                run.join("score").join(format!("{name}.parquet")).display()
            );
        }
    }
    Ok(())
}

fn print_analysis_score(a: &cortexmap::score::analysis::AnalysisScore) {
    println!("responsive cells against the truth (cell-sessions of matched ROIs):");
    println!("  session     TP    FN    FP    TN  sensitivity  specificity  balanced");
    for r in &a.responsive {
        println!(
            "  {:<7} {:>5} {:>5} {:>5} {:>5} {:>12.3} {:>12.3} {:>9.3}",
            r.session, r.tp, r.fn_, r.fp, r.tn, r.sensitivity, r.specificity, r.balanced_accuracy
        );
    }
    if !a.maps.is_empty() {
        let m: Vec<String> = a
            .maps
            .iter()
            .map(|m| {
                format!(
                    "{} {:.2}/{:.2} (truth {:.2}/{:.2})",
                    m.session,
                    m.diagonal_norm,
                    m.off_diagonal_norm,
                    m.true_diagonal_norm,
                    m.true_off_diagonal_norm
                )
            })
            .collect();
        println!("normalised map diagonal/off-diagonal: {}", m.join(", "));
        let worst = a.maps.iter().map(|m| m.max_error()).fold(0.0, f64::max);
        println!(
            "largest error of a normalised map value: {worst:.3}; map similarity between \
             sessions vs truth: Pearson r {:.3}",
            a.map_similarity_r
        );
        if let Some(f) = &a.map_noise_floor {
            let sigma: Vec<String> = f
                .session_sigma
                .iter()
                .map(|(s, v)| format!("{s} {v:.3}"))
                .collect();
            println!(
                "noise floor: the truth's responses with this run's ΔF/F noise (median s.d. \
                 {}) give a largest error of {:.3} (median of {} draws; 10-90 %: {:.3}-{:.3}; \
                 {} draws within 0.05); this run: {worst:.3}",
                sigma.join(", "),
                f.quantile(0.5),
                f.draws,
                f.quantile(0.1),
                f.quantile(0.9),
                f.max_errors.iter().filter(|e| **e <= 0.05).count()
            );
        }
    }
    for t in &a.cell_tags {
        println!(
            "{}: {} true, {} found, {} correct; precision {:.3}, recall {:.3}, F1 {:.3}",
            t.tag, t.n_true, t.n_found, t.n_correct, t.precision, t.recall, t.f1
        );
    }
}

fn print_track_score(t: &cortexmap::score::track::TrackScore) {
    let align: Vec<String> = t
        .alignment
        .iter()
        .map(|(s, e)| format!("{s} {e:.2}"))
        .collect();
    println!("FOV alignment RMSE (px): {}", align.join(", "));
    println!("same-cell links between sessions (ROIs matched to true cells only):");
    println!("  sessions     true  pred  correct  found  precision  recall");
    for l in t.links.iter().chain(std::iter::once(&t.pooled)) {
        println!(
            "  {:<11} {:>5} {:>5} {:>8} {:>6} {:>10.3} {:>7.3}",
            format!("{}-{}", l.session_a, l.session_b),
            l.n_true,
            l.n_pred,
            l.n_correct,
            l.n_found,
            l.precision,
            l.recall
        );
    }
    println!("tags:  tag      true  detected  pred  correct  precision  recall");
    for g in &t.tags {
        println!(
            "       {:<8} {:>5} {:>9} {:>5} {:>8} {:>10.3} {:>7.3}",
            g.tag, g.n_true, g.n_true_detected, g.n_pred, g.n_correct, g.precision, g.recall
        );
    }
}

fn check_cmd(file: &Path) -> Result<()> {
    let text = std::fs::read_to_string(file).map_err(|e| Error::input(file, e.to_string()))?;
    if text.contains("[[experiment]]") {
        let s = cortexmap::config::load_study(file)?;
        println!(
            "study '{}': {} experiments, all manifests found",
            s.name,
            s.experiments.len()
        );
        return Ok(());
    }
    let exp = cortexmap::config::load_experiment(file)?;
    for s in &exp.sessions {
        let info = cortexmap::movie::probe_movie(&pipeline::functional_movie(s))?;
        exp.check_stimuli(s, info.n_frames as u64)?;
        println!(
            "{}: day {}, {} files, {} frames of {}x{} {}",
            s.id,
            s.day,
            s.files.len(),
            info.n_frames,
            info.width,
            info.height,
            info.pixel_type.name()
        );
    }
    println!(
        "experiment '{}' is valid (reference {})",
        exp.name, exp.reference
    );
    Ok(())
}

fn inspect_cmd(file: &Path) -> Result<()> {
    let info = cortexmap::io::tiff::probe(file)?;
    println!("file:        {}", info.path.display());
    println!(
        "format:      {}",
        if info.bigtiff {
            "BigTIFF"
        } else {
            "classic TIFF"
        }
    );
    println!("pages:       {}", info.pages);
    println!("page shape:  {} rows x {} columns", info.height, info.width);
    println!("dtype:       {}", info.pixel_type.name());
    println!("compression: {}", info.compression);
    println!("size:        {} bytes", info.file_size);
    if let Some(sw) = &info.software {
        println!(
            "software:    {}",
            sw.lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(100)
                .collect::<String>()
        );
    }
    match &info.scanimage {
        Some(si) => {
            println!("ScanImage:");
            println!(
                "  version:            {}",
                si.version.as_deref().unwrap_or("?")
            );
            println!("  frame rate:         {}", opt(si.frame_rate));
            println!("  channels in file:   {}", si.channels_in_file());
            println!("  channels saved:     {:?}", si.channels_saved);
            println!("  channels active:    {:?}", si.channels_active);
            println!("  zoom:               {}", opt(si.zoom));
            println!("  bidirectional:      {}", opt(si.bidirectional));
            println!(
                "  frames (per chan.): {}",
                info.pages / si.channels_in_file().max(1)
            );
        }
        None => println!("ScanImage:   no"),
    }
    if let Some(d) = &info.description {
        let first: Vec<&str> = d.lines().take(3).collect();
        println!(
            "description: {}",
            first.join(" | ").chars().take(160).collect::<String>()
        );
    }
    Ok(())
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|x| x.to_string()).unwrap_or_else(|| "?".into())
}

fn demo_cmd(out: &Path, seed: u64, overwrite: bool, progress: &dyn Progress) -> Result<()> {
    let cfg = SimConfig::demo();
    let exp_dir = out.join("experiment");
    let s = simulate::simulate(&cfg, seed, &exp_dir, overwrite, progress)?;
    print_simulation(&s, true);
    let run_dir = out.join("run");
    run_cmd(&s.manifest, &run_dir, None, None, None, progress)?;
    println!();
    println!("demo: {}", cortexmap::report::story(&run_dir)?.text());
    println!("experiment and truth: {}", exp_dir.display());
    println!("run tables:           {}", run_dir.display());
    println!(
        "report:               {}",
        cortexmap::report::report_path(&run_dir).display()
    );
    println!(
        "score against truth:  cortexmap score --truth {} --run {}",
        exp_dir.display(),
        run_dir.display()
    );
    Ok(())
}

fn bench_cmd(what: &BenchCommand, progress: &dyn Progress) -> Result<()> {
    match what {
        BenchCommand::TiffRead { file, repeats } => {
            let b = cortexmap::bench::tiff_read(file, *repeats)?;
            println!(
                "{}: {} pages, {} bytes; raw read {:.0} MB/s; TIFF decode to f32 {:.0} MB/s ({:.0} pages/s); ratio {:.2}",
                file.display(),
                b.pages,
                b.bytes,
                b.raw_mb_s(),
                b.tiff_mb_s(),
                b.pages_per_s(),
                b.tiff_mb_s() / b.raw_mb_s()
            );
        }
        BenchCommand::Motion {
            size,
            frames,
            nonrigid,
            out,
        } => {
            let b = cortexmap::bench::motion(*size, *frames, *nonrigid, out)?;
            println!(
                "motion {}x{} int16, {} frames, {} threads: FFT pair {:.2} ms on one core ({:.0} pairs/s per core alone); {:.0} pairs/s with all {} threads transforming (the bound); rigid {:.0} frames/s registering ({:.2}x the bound, {:.2}x the one-core rate times {}), {:.0} frames/s with the {:.1} s reference{}; peak RSS {} MB",
                b.size,
                b.size,
                b.frames,
                b.threads,
                b.fft_pair_ms,
                1e3 / b.fft_pair_ms,
                b.fft_pairs_per_s_all_threads,
                b.threads,
                b.rigid_register_fps,
                b.rigid_register_fps / b.fft_pairs_per_s_all_threads,
                b.rigid_register_fps / (b.threads as f64 * 1e3 / b.fft_pair_ms),
                b.threads,
                b.rigid_fps,
                b.reference_seconds,
                b.nonrigid_fps
                    .zip(b.nonrigid_reference_seconds)
                    .map(|(f, r)| format!(
                        "; rigid + nonrigid {f:.0} frames/s registering, {r:.1} s reference"
                    ))
                    .unwrap_or_default(),
                b.peak_rss_mb.map(|m| format!("{m:.0}")).unwrap_or_else(|| "?".into())
            );
        }
        BenchCommand::Simulate {
            preset,
            frames,
            out,
        } => {
            let mut cfg = SimConfig::preset(preset)?;
            cfg.apply(&Overrides {
                frames: *frames,
                ..Default::default()
            })?;
            let s = simulate::simulate(&cfg, 1, out, true, progress)?;
            println!(
                "simulate --preset {preset}: {} frames of {}x{} in {} sessions, {:.1} frames/s (render + write)",
                s.frames, cfg.width, cfg.height, s.sessions, s.frames_per_second
            );
            std::fs::remove_dir_all(out).map_err(|e| Error::output(out, e))?;
        }
    }
    Ok(())
}

/// A reader that stops early (`cortexmap report ... | head -1`) closes our stdout:
/// end quietly with the shell's SIGPIPE status instead of a panic message.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    quiet_on_closed_stdout();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version are successes; bad arguments are bad input (exit 1).
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_logging(cli.verbose, cli.quiet);
    let progress = CliProgress::new(cli.quiet);
    let result = match &cli.command {
        Command::Demo {
            out,
            seed,
            overwrite,
        } => demo_cmd(out, *seed, *overwrite, &progress),
        Command::Simulate(a) => simulate_cmd(a, &progress),
        Command::Run {
            manifest,
            out,
            params,
            until,
            from,
        } => run_cmd(
            manifest,
            out,
            params.as_deref(),
            until.as_deref(),
            from.as_deref(),
            &progress,
        ),
        Command::Check { file } => check_cmd(file),
        Command::TrackFootprints {
            files,
            out,
            reference,
            params,
        } => track_footprints_cmd(files, out, *reference, params.as_deref(), &progress),
        Command::Report { run } => report_cmd(run),
        Command::Study {
            study,
            out,
            permutations,
            seed,
            distance_bins,
        } => distance_bins
            .as_deref()
            .map_or(Ok(Default::default()), parse_distance_bins)
            .and_then(|bins| study_cmd(study, out, (*permutations, *seed, bins), &progress)),
        Command::SimulateStudy {
            preset,
            seed,
            mice,
            fovs,
            out,
            overwrite,
        } => simulate_study_cmd(preset, *seed, *mice, *fovs, out, *overwrite, &progress),
        Command::Score {
            truth,
            regions,
            session,
            max_dist,
            run,
        } => match (truth, regions) {
            (Some(t), _) => score_cmd(t, run),
            (None, Some(r)) => regions_cmd(r, run, session.as_deref(), *max_dist),
            (None, None) => Err(cortexmap::error::Error::usage(
                "score needs --truth or --regions",
            )),
        },
        Command::Inspect { file } => inspect_cmd(file),
        Command::Bench { what } => bench_cmd(what, &progress),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
