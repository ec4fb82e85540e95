//! The end of a run: the HTML report, and reruns that skip unchanged parts.

mod common;

use common::bin;
use cortexmap::simulate;
use std::path::Path;
use std::process::Output;

fn cortexmap(args: &[&str]) -> Output {
    let out = bin().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "cortexmap {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn tables(run: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(run)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// One run of every stage writes a self-contained report; a rerun skips every
/// part; a changed analysis parameter reruns only `analyze`; a lost output reruns
/// its part and what follows; `--from` forces a part.
#[test]
fn report_and_reruns_that_skip_unchanged_parts() {
    let dir = tempfile::tempdir().unwrap();
    let exp = dir.path().join("exp");
    let cfg = common::small_standard();
    let s = simulate::simulate(&cfg, 4, &exp, false, &cortexmap::progress::NoProgress).unwrap();
    let manifest = s.manifest.to_str().unwrap();
    let run = dir.path().join("run");
    let run_s = run.to_str().unwrap();

    let first = cortexmap(&["run", manifest, "--out", run_s]);
    assert!(!stdout(&first).contains("skipped"), "{}", stdout(&first));
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    for id in [
        "sessions",
        "fov",
        "motion",
        "tracking",
        "responses",
        "maps",
        "spatial",
    ] {
        assert!(
            html.contains(&format!("id=\"{id}\"")),
            "section {id} missing"
        );
    }
    // 3 fields of view + 3 motion traces + tracking + 2 response charts + 3 maps +
    // map summary + correlation summary + map similarity.
    assert!(html.matches("<svg").count() >= 15, "too few figures");
    assert_eq!(html.matches("data:image/png;base64,").count(), 3);
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"));
    assert!(html.contains("cells tracked"));
    // The sessions table says whether dark somata were sought (the simulator's
    // somata are bright).
    assert!(html.contains("<th>dark somata sought</th>") && html.contains("<td>no ("));
    let before = tables(&run);

    // Nothing changed: every part is skipped, nothing is rewritten.
    let again = cortexmap(&["run", manifest, "--out", run_s]);
    assert!(
        stdout(&again).contains("skipped: ingest+motion, detect+extract, track, analyze"),
        "{}",
        stdout(&again)
    );
    assert!(tables(&run) == before, "an unchanged rerun rewrote tables");
    // The same experiment reached through another path is the same experiment.
    let detour = exp.join("..").join("exp").join("experiment.toml");
    let via = cortexmap(&["run", detour.to_str().unwrap(), "--out", run_s]);
    assert!(
        stdout(&via).contains("skipped: ingest+motion, detect+extract, track, analyze"),
        "another spelling of the manifest's path reran parts: {}",
        stdout(&via)
    );

    // A changed analysis parameter reruns analyze alone, to the same tables
    // upstream.
    let params = dir.path().join("params.toml");
    std::fs::write(&params, "[analysis]\nfdr_q = 0.2\n").unwrap();
    let run_with_params = || {
        cortexmap(&[
            "run",
            manifest,
            "--out",
            run_s,
            "--params",
            params.to_str().unwrap(),
        ])
    };
    let changed = run_with_params();
    assert!(
        stdout(&changed).contains("skipped: ingest+motion, detect+extract, track\n"),
        "{}",
        stdout(&changed)
    );
    let after = tables(&run);
    for ((name, a), (_, b)) in before.iter().zip(&after) {
        if ["rois", "traces", "motion", "alignment"].contains(&name.trim_end_matches(".parquet")) {
            assert!(a == b, "{name} changed though its part was skipped");
        }
    }

    // The frame stores are needed only to redo detection: without them a changed
    // analysis parameter still reruns analyze alone.
    std::fs::remove_dir_all(run.join("frames")).unwrap();
    std::fs::write(&params, "[analysis]\nfdr_q = 0.2\nshuffles = 500\n").unwrap();
    let lean = run_with_params();
    assert!(
        stdout(&lean).contains("skipped: ingest+motion, detect+extract, track\n"),
        "{}",
        stdout(&lean)
    );
    std::fs::write(&params, "[analysis]\nfdr_q = 0.2\n").unwrap();

    // A lost output (as after a killed run) reruns its part and everything after;
    // detection needs the frames again, so that is from ingest.
    std::fs::remove_file(run.join("traces.parquet")).unwrap();
    let resumed = run_with_params();
    let out = stdout(&resumed);
    assert!(!out.contains("skipped"), "{out}");
    assert!(out.contains("tracked cells"), "track did not rerun: {out}");
    assert!(
        tables(&run) == after,
        "the resumed run differs from the full one"
    );

    // --from forces a part even when nothing changed.
    let forced = cortexmap(&[
        "run",
        manifest,
        "--out",
        run_s,
        "--params",
        params.to_str().unwrap(),
        "--from",
        "analyze",
    ]);
    assert!(stdout(&forced).contains("skipped: ingest+motion, detect+extract, track\n"));
    // The forced part chained its key on the recorded one: a plain rerun agrees.
    let settled = run_with_params();
    assert!(
        stdout(&settled).contains("skipped: ingest+motion, detect+extract, track, analyze"),
        "{}",
        stdout(&settled)
    );

    // `report` on its own rewrites the same file and prints the story.
    let report = cortexmap(&["report", "--run", run_s]);
    assert!(stdout(&report).contains("cells tracked"));
}

/// A run stopped before the analysis still gets a report, saying what is missing.
#[test]
fn report_of_a_partial_run_names_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let exp = dir.path().join("exp");
    let s = simulate::simulate(
        &common::tiny_config(),
        5,
        &exp,
        false,
        &cortexmap::progress::NoProgress,
    )
    .unwrap();
    let run = dir.path().join("run");
    let run_s = run.to_str().unwrap();
    cortexmap(&[
        "run",
        s.manifest.to_str().unwrap(),
        "--out",
        run_s,
        "--until",
        "extract",
    ]);
    assert!(!run.join("report.html").exists());
    cortexmap(&["report", "--run", run_s]);
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert!(html.contains("alignment.parquet is not in this run"));
    assert!(html.contains("rsm.parquet is not in this run"));
    assert!(html.contains("data:image/png;base64,"));

    // Not a run folder: a clear error naming it.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let bad = bin()
        .args(["report", "--run", empty.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("not a run folder") && err.contains("empty"),
        "{err}"
    );
}
