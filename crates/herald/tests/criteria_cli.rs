//! `herald criteria` as a real process: its output and its exit statuses (0 match,
//! 1 no match, 2 invalid or unsupported criteria).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

/// A file in a fresh temporary directory holding `value` as JSON.
fn write_json(name: &str, value: &Value) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("herald-criteria-cli-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, value.to_string()).unwrap();
    path
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn herald_criteria(args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("criteria")
        .args(args)
        // Settings are not read: a broken one must not matter.
        .env("HERALD_LISTEN", "not an address")
        .output()
        .expect("herald runs");
    Run {
        code: output.status.code().expect("exit status"),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

fn observation(status: &str, patient: &str) -> Value {
    json!({
        "resourceType": "Observation",
        "id": "glucose",
        "status": status,
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "laboratory"
        }]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
        "subject": {"reference": patient}
    })
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_match_exits_0_and_shows_each_clause() {
    let resource = write_json("obs.json", &observation("final", "Patient/123"));
    let run = herald_criteria(&[
        "--criteria",
        "Observation?code=http://loinc.org|2345-7&subject=Patient/123",
        "--resource",
        path(&resource),
    ]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.starts_with("match\n"), "{}", run.stdout);
    assert!(run.stdout.contains("pass  code=http://loinc.org|2345-7"));
    assert!(run.stdout.contains("seen: Patient/123"));
}

#[test]
fn a_no_match_exits_1_and_names_the_failing_clause() {
    let resource = write_json("obs.json", &observation("final", "Patient/123"));
    let run = herald_criteria(&[
        "--criteria",
        "Observation?code=http://loinc.org|2345-7&subject=Patient/1",
        "--resource",
        path(&resource),
        "--json",
    ]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let explanation: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(explanation["matched"], false);
    let subject = &explanation["clauses"][2];
    assert_eq!(subject["clause"], "subject=Patient/1");
    assert_eq!(subject["matched"], false);
    assert_eq!(subject["values_seen"], json!(["Patient/123"]));
}

#[test]
fn invalid_criteria_exit_2_with_the_operation_outcome() {
    let resource = write_json("obs.json", &observation("final", "Patient/123"));
    let run = herald_criteria(&[
        "--criteria",
        "Observation?colour=blue",
        "--resource",
        path(&resource),
    ]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    let outcome: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    assert_eq!(outcome["issue"][0]["code"], "invalid");
    assert!(outcome["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .contains("unknown search parameter 'colour' for Observation"));
    assert!(run.stderr.contains("unknown search parameter 'colour'"));
}

#[test]
fn an_unsupported_modifier_exits_2() {
    let resource = write_json("obs.json", &observation("final", "Patient/123"));
    let run = herald_criteria(&[
        "--criteria",
        "Observation?code:in=http://example.org/ValueSet/glucose",
        "--resource",
        path(&resource),
    ]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    let outcome: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(outcome["issue"][0]["code"], "not-supported");
    assert!(outcome["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .contains("modifier ':in' on 'code' is not supported"));
}

#[test]
fn fhirpath_criteria_see_current_and_previous() {
    let current = write_json("current.json", &observation("final", "Patient/123"));
    let previous = write_json("previous.json", &observation("preliminary", "Patient/123"));
    let criteria = "%current.status = 'final' and %previous.status = 'preliminary'";
    let args = |previous: &PathBuf| {
        herald_criteria(&[
            "--language",
            "fhirpath",
            "--criteria",
            criteria,
            "--resource",
            path(&current),
            "--previous",
            path(previous),
        ])
    };
    let run = args(&previous);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("interaction: update"), "{}", run.stdout);
    let run = args(&current);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("seen: false"), "{}", run.stdout);

    let run = herald_criteria(&[
        "--language",
        "fhirpath",
        "--criteria",
        "%current.status = ",
        "--resource",
        path(&current),
    ]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("OperationOutcome"));
}

#[test]
fn cel_criteria_see_current_previous_and_the_event() {
    let current = write_json("current.json", &observation("final", "Patient/123"));
    let criteria = "current.status == 'final' && event.interaction == 'create'";
    let run = herald_criteria(&[
        "--language",
        "cel",
        "--criteria",
        criteria,
        "--resource",
        path(&current),
    ]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let run = herald_criteria(&[
        "--language",
        "cel",
        "--criteria",
        criteria,
        "--resource",
        path(&current),
        "--previous",
        path(&current),
    ]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("interaction: update"));
}

#[test]
fn a_topic_explains_its_trigger_with_previous_and_current_and_the_filters() {
    let topic = write_json(
        "topic.json",
        &json!({
            "resourceType": "SubscriptionTopic",
            "url": "http://example.org/topic/observation-finalized",
            "status": "active",
            "resourceTrigger": [{
                "resource": "Observation",
                "supportedInteraction": ["create", "update"],
                "queryCriteria": {
                    "previous": "status:not=final",
                    "resultForCreate": "test-passes",
                    "current": "status=final",
                    "resultForDelete": "test-fails",
                    "requireBoth": true
                }
            }],
            "canFilterBy": [{"resource": "Observation", "filterParameter": "patient"}]
        }),
    );
    let finalized = write_json("final.json", &observation("final", "Patient/123"));
    let preliminary = write_json("prelim.json", &observation("preliminary", "Patient/123"));
    let explain = |previous: &PathBuf, filter: &str| {
        herald_criteria(&[
            "--topic",
            path(&topic),
            "--language",
            "filter",
            "--criteria",
            filter,
            "--resource",
            path(&finalized),
            "--previous",
            path(previous),
        ])
    };
    let run = explain(&preliminary, "Observation.patient=Patient/123");
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run
        .stdout
        .contains("pass  trigger[0] previous: status:not=final\n        seen: preliminary"));
    assert!(run
        .stdout
        .contains("pass  trigger[0] current: status=final"));
    assert!(run.stdout.contains("pass  patient=Patient/123"));

    // Final before and after: the trigger does not fire.
    let run = explain(&finalized, "Observation.patient=Patient/123");
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run
        .stdout
        .contains("FAIL  trigger[0] previous: status:not=final\n        seen: final"));

    // A filter the topic does not offer is refused as a Subscription would be.
    let run = explain(&preliminary, "Observation.code=2345-7");
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("is not allowed by topic"));

    // Delete is not a supported interaction.
    let run = herald_criteria(&[
        "--topic",
        path(&topic),
        "--resource",
        path(&finalized),
        "--interaction",
        "delete",
    ]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("the trigger does not support delete"));
}

#[test]
fn an_unreadable_resource_exits_2() {
    let run = herald_criteria(&[
        "--criteria",
        "Observation?status=final",
        "--resource",
        "/nonexistent/herald/obs.json",
    ]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("cannot read the resource file"));
}
