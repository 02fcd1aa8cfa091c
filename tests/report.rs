//! `dx-admission report` on manifests, as the DX team runs it to try a candidate schema version
//! on what customers run: the table, the findings object by object, and the exit codes. The
//! cluster side (PolicyReports, stale config, stuck rollouts) runs end to end
//! (`tests/e2e/reports.rs`).

mod common;

fn report(args: &[&str]) -> (i32, String, String) {
    let args: Vec<&str> = std::iter::once("report").chain(args.iter().copied()).collect();
    common::binary::command(&args, "")
}

const TABLE_HEAD: &str = "NAMESPACE  COMPONENT         VERSION   SCHEMA  FINDINGS  CONFIG  OLD PODS  ROLLOUT\n";

#[test]
fn the_examples_are_healthy_under_the_default_version() {
    let (code, out, err) = report(&["-f", "examples/valid", "-n", "dx"]);
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    let expected = format!(
        "DX deployment in the manifests\n\n{TABLE_HEAD}\
         dx         core              95.225.0  v2      none      -       -         -\n\
         dx         dam               95.225.0  v2      none      -       -         -\n\
         dx         persistence       95.225.0  v2      none      -       -         -\n\
         dx         ring-api          95.225.0  v2      none      -       -         -\n\
         dx         content-composer  95.225.0  v2      none      -       -         -\n\
         dx         image-processor   95.225.0  v2      none      -       -         -\n\
         dx         global            95.225.0  v2      none      -       -         -\n\
         \nHealthy: 0 of 13 DX objects denied, 0 workloads on stale config, 0 rollouts stuck\n"
    );
    assert_eq!(out, expected);
}

#[test]
fn a_candidate_version_lists_what_it_would_deny_object_by_object() {
    let dir = tempfile::tempdir().unwrap();
    let schemas = dir.path().join("schemas");
    common::candidate_schemas(&schemas);
    let schemas = schemas.to_str().unwrap();
    let (code, out, err) =
        report(&["-f", "examples/valid", "-n", "dx", "--schema-version", "v3", "--schemas", schemas]);
    assert_eq!((code, err.as_str()), (1, ""), "{out}");
    let expected = format!(
        "DX deployment in the manifests, judged under candidate schema v3\n\n{TABLE_HEAD}\
         dx         core              95.225.0  v3      none      -       -         -\n\
         dx         dam               95.225.0  v3      none      -       -         -\n\
         dx         persistence       95.225.0  v3      none      -       -         -\n\
         dx         ring-api          95.225.0  v3      none      -       -         -\n\
         dx         content-composer  95.225.0  v3      none      -       -         -\n\
         dx         image-processor   95.225.0  v3      none      -       -         -\n\
         dx         global            95.225.0  v3      1 deny    -       -         -\n\
         \nFindings:\n  ConfigMap dx/dx-global-config: deny data[dx.region]: is required but missing [schema] fix: see schemas/v3/configmap/global.json\n\
         \nNeeds attention: 1 of 13 DX objects denied, 0 workloads on stale config, 0 rollouts stuck\n"
    );
    assert_eq!(out, expected);
    // The same set, without the candidate: v2 still judges everything clean.
    let (code, _, _) = report(&["-f", "examples/valid", "-n", "dx", "--schemas", schemas]);
    assert_eq!(code, 0);

    let (code, out, _) =
        report(&["-f", "examples/valid", "-n", "dx", "--schema-version", "v3", "--schemas", schemas, "-o", "json"]);
    assert_eq!(code, 1);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((json["healthy"].as_bool(), json["schemaVersion"].as_str()), (Some(false), Some("v3")));
    let denied: Vec<String> = json["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["verdict"] == "denied")
        .map(|o| {
            format!("{} {}: {}", o["kind"].as_str().unwrap(), o["name"].as_str().unwrap(), o["findings"][0]["message"])
        })
        .collect();
    assert_eq!(denied, [r#"ConfigMap dx-global-config: "is required but missing""#]);
    assert_eq!(json["workloads"], serde_json::Value::Null, "nothing runs in manifests");
}

#[test]
fn an_unknown_candidate_version_is_an_input_error() {
    let (code, out, err) = report(&["-f", "examples/valid", "--schema-version", "v9"]);
    assert_eq!((code, out.as_str()), (2, ""));
    assert_eq!(err, "error: --schema-version v9: not in schemas (it has v1, v2)\n");
    let (code, _, err) = report(&["--schema-version", "v3"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("the following required arguments were not provided:\n  <--cluster|--filename <FILES>>"),
        "{err}"
    );
}
