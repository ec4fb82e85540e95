//! The command line on real files, on a simulated experiment, and on bad input.

mod common;

use common::{bin, real_data, tiny_config};
use cortexmap::progress::NoProgress;
use cortexmap::simulate;
use std::path::Path;

fn run_ok(args: &[&str]) -> String {
    let out = bin().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "cortexmap {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run_err(args: &[&str]) -> (i32, String) {
    let out = bin().args(args).output().unwrap();
    assert!(!out.status.success(), "cortexmap {args:?} should fail");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn inspect_reads_every_real_tiff() {
    let Some(real) = real_data() else { return };
    let p = |rel: &str| real.join(rel).to_string_lossy().into_owned();
    let nf = run_ok(&[
        "inspect",
        &p("neurofinder_crop192/movie_600x192x192_u16.tif"),
    ]);
    assert!(nf.contains("pages:       600"), "{nf}");
    assert!(
        nf.contains("192 rows x 192 columns") && nf.contains("uint16"),
        "{nf}"
    );
    let sima = run_ok(&["inspect", &p("sima_ca1_example/example_20x128x256_u16.tif")]);
    assert!(
        sima.contains("pages:       20") && sima.contains("128 rows x 256 columns"),
        "{sima}"
    );
    let si = run_ok(&[
        "inspect",
        &p("scanimage57_2ch/scanimage57_resonant_2ch_3frames_512.tif"),
    ]);
    for want in [
        "BigTIFF",
        "pages:       6",
        "int16",
        "5.7",
        "29.9786",
        "channels in file:   2",
        "bidirectional:      true",
    ] {
        assert!(si.contains(want), "missing '{want}' in:\n{si}");
    }
}

#[test]
fn run_ingests_a_simulated_experiment() {
    let dir = tempfile::tempdir().unwrap();
    let exp = dir.path().join("exp");
    let s = simulate::simulate(&tiny_config(), 1, &exp, false, &NoProgress).unwrap();
    let run = dir.path().join("run");
    let out = run_ok(&[
        "run",
        s.manifest.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--until",
        "ingest",
    ]);
    assert!(out.contains("d5: day 5"), "{out}");
    let t = cortexmap::io::table::read_table(run.join("sessions.parquet")).unwrap();
    assert_eq!(t.n_rows(), 3);
    let check = run_ok(&["check", s.manifest.to_str().unwrap()]);
    assert!(check.contains("is valid"), "{check}");
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn bad_inputs_fail_cleanly_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let exp = dir.path().join("exp");
    let s = simulate::simulate(&tiny_config(), 1, &exp, false, &NoProgress).unwrap();
    let manifest = s.manifest.to_str().unwrap().to_string();
    let run = dir.path().join("run");
    let run_s = run.to_str().unwrap();

    // A manifest that points at nothing.
    let m2 = dir.path().join("missing.toml");
    write(
        &m2,
        "name = \"x\"\nfs = 10.0\nreference = \"a\"\n[[session]]\nid = \"a\"\nday = 1\ntiff = [\"nowhere/*.tif\"]\n",
    );
    let (code, err) = run_err(&["run", m2.to_str().unwrap(), "--out", run_s]);
    assert_eq!(code, 1);
    assert!(
        err.contains("missing.toml") && err.contains("matches no file"),
        "{err}"
    );

    // Stimulus onsets past the end of the movie.
    let stim = exp.join("d3/stimuli.csv");
    let original = std::fs::read_to_string(&stim).unwrap();
    write(&stim, &format!("{original}999,100000,pt01\n"));
    let (code, err) = run_err(&["run", &manifest, "--out", run_s]);
    assert_eq!(code, 1);
    assert!(
        err.contains("stimuli.csv") && err.contains("past the end"),
        "{err}"
    );
    write(&stim, &original);

    // A truncated TIFF: an error naming it, and no table written.
    let tif = exp.join("d7/d7_00002.tif");
    let bytes = std::fs::read(&tif).unwrap();
    std::fs::write(&tif, &bytes[..bytes.len() / 2]).unwrap();
    let (code, err) = run_err(&["run", &manifest, "--out", run_s]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("d7_00002.tif"), "{err}");
    assert!(
        !run.join("sessions.parquet").exists(),
        "no half-written output"
    );

    // Garbage instead of a TIFF.
    std::fs::write(&tif, b"this is not a tiff file at all").unwrap();
    let (code, err) = run_err(&["inspect", tif.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("d7_00002.tif"), "{err}");

    // Bad simulator options.
    let (code, err) = run_err(&[
        "simulate", "--preset", "sample", "--size", "8", "--out", run_s,
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("too small"), "{err}");
    let (code, _) = run_err(&["simulate", "--preset", "nope", "--out", run_s]);
    assert_eq!(code, 1);

    // Distance bins that would need millions of bins, or make no range.
    for bins in ["0,100,1e-9", "50,10,5", "a,b,c", "0,100"] {
        let (code, err) = run_err(&["study", "s.toml", "--out", run_s, "--distance-bins", bins]);
        assert_eq!(code, 1, "{bins}");
        assert!(err.contains("--distance-bins"), "{bins}: {err}");
    }
}

/// A reader that closes our stdout early (`| head -1`) ends the command quietly
/// with the SIGPIPE status, not with a panic message.
#[test]
fn closed_stdout_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = bin()
        .args(["simulate", "--preset", "sample", "--size", "32", "--out"])
        .arg(dir.path().join("s"))
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
