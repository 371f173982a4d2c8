//! `[dcgm] diag = N`: DCGM's own diagnostic, `dcgmi diag -r N -j`, as one
//! of verify's checks (level 1 takes seconds: deployment and software;
//! 2 and 3 add hardware and stress tests, minutes). It asks nv-hostengine,
//! which `[dcgm] enable` runs, and changes no GPU setting.
//!
//! dcgmi prints `{"DCGM Diagnostic" (DCGM 3: "DCGM GPU Diagnostic"):
//! {"test_categories": [{"category", "tests": [{"name", "results":
//! [{"status", "info", "warnings", ...}], "test_summary": {"status"}}]}]}}`
//! and exits non-zero when a test fails.

use serde_json::Value;

use crate::host::{Cmd, Host};

use super::verification::{VerifyCheck, check};

/// One test's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Test {
    pub category: String,
    pub name: String,
    /// "Pass", "Fail", "Warn", "Skip", "Not Run", as dcgmi writes it.
    pub status: String,
    /// What a failing or warning test said.
    pub detail: Vec<String>,
}

/// The tests of dcgmi's JSON, or why it could not be read.
pub fn parse(text: &str) -> Result<Vec<Test>, String> {
    let start = text.find('{').ok_or("no JSON document")?;
    let end = text.rfind('}').ok_or("no JSON document")?;
    let value: Value =
        serde_json::from_str(&text[start..=end]).map_err(|e| format!("not JSON: {e}"))?;
    let root = value
        .get("DCGM Diagnostic")
        .or_else(|| value.get("DCGM GPU Diagnostic"))
        .ok_or("no \"DCGM Diagnostic\" object")?;
    let categories = root
        .get("test_categories")
        .and_then(Value::as_array)
        .ok_or("no test_categories")?;
    let mut tests = Vec::new();
    for category in categories {
        let label = category["category"].as_str().unwrap_or("?").to_string();
        for test in category["tests"].as_array().into_iter().flatten() {
            tests.push(one_test(&label, test));
        }
    }
    Ok(tests)
}

fn one_test(category: &str, test: &Value) -> Test {
    let results: Vec<&Value> = test["results"].as_array().into_iter().flatten().collect();
    let statuses: Vec<&str> = results
        .iter()
        .filter_map(|r| r["status"].as_str())
        .collect();
    let status = test["test_summary"]["status"]
        .as_str()
        .or_else(|| statuses.iter().copied().find(|s| failed(s)))
        .or_else(|| statuses.first().copied())
        .unwrap_or("Not Run")
        .to_string();
    let mut detail = Vec::new();
    for result in &results {
        for warning in result["warnings"].as_array().into_iter().flatten() {
            let text = warning["warning"].as_str().or(warning.as_str());
            detail.extend(text.map(str::to_string));
        }
        if failed(result["status"].as_str().unwrap_or("")) {
            detail.extend(result["info"].as_str().map(str::to_string));
        }
    }
    detail.dedup();
    Test {
        category: category.to_string(),
        name: test["name"].as_str().unwrap_or("?").to_string(),
        status,
        detail,
    }
}

fn failed(status: &str) -> bool {
    status.eq_ignore_ascii_case("fail")
}

/// The check: every test passed, warned or was skipped; a failed test,
/// dcgmi missing or output that cannot be read fails it.
pub fn diag(host: &Host, level: u8) -> VerifyCheck {
    let command = format!("dcgmi diag -r {level} -j");
    let cmd = Cmd::read("dcgmi").args(["diag", "-r", &level.to_string(), "-j"]);
    let output = match host.runner.run(&cmd) {
        Ok(output) => output,
        Err(error) => {
            return check(
                "dcgm-diag",
                Some(false),
                format!("`{command}` could not run: {error}"),
            );
        }
    };
    judge(&command, output.code, &output.stdout, &output.stderr)
}

fn judge(command: &str, code: Option<i32>, stdout: &str, stderr: &str) -> VerifyCheck {
    let tests = match parse(stdout) {
        Ok(tests) if !tests.is_empty() => tests,
        Ok(_) | Err(_) => {
            let said = if stderr.trim().is_empty() {
                stdout
            } else {
                stderr
            };
            return check(
                "dcgm-diag",
                Some(false),
                format!(
                    "`{command}` exited {}: {}",
                    code.map_or("by a signal".into(), |c| c.to_string()),
                    said.trim().chars().take(400).collect::<String>()
                ),
            );
        }
    };
    let failures: Vec<String> = tests
        .iter()
        .filter(|t| failed(&t.status))
        .map(|t| match t.detail.first() {
            Some(detail) => format!("{} ({}): {detail}", t.name, t.category),
            None => format!("{} ({})", t.name, t.category),
        })
        .collect();
    let passed = tests
        .iter()
        .filter(|t| t.status.eq_ignore_ascii_case("pass"))
        .count();
    let mut evidence = format!("`{command}`: {passed} of {} test(s) passed", tests.len());
    if !failures.is_empty() {
        evidence.push_str(&format!("; failed: {}", failures.join("; ")));
    }
    check("dcgm-diag", Some(failures.is_empty()), evidence)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// dcgmi diag -r 1 -j as DCGM 4 prints it (abridged: two categories).
    const PASSED: &str = r#"{
  "DCGM Diagnostic" : {
    "test_categories" : [
      { "category" : "Deployment",
        "tests" : [
          { "name" : "software",
            "results" : [ { "entity_group" : "GPU", "entity_group_id" : 1, "entity_id" : 0, "status" : "Pass" } ],
            "test_summary" : { "status" : "Pass" } } ] },
      { "category" : "Hardware",
        "tests" : [
          { "name" : "memory",
            "results" : [ { "entity_id" : 0, "status" : "Skip", "info" : "not run at level 1" } ],
            "test_summary" : { "status" : "Skip" } } ] } ]
  },
  "version" : "4.4.1"
}"#;

    #[test]
    fn passed_and_skipped_tests_pass() {
        let tests = parse(PASSED).unwrap();
        assert_eq!(tests.len(), 2);
        assert_eq!(tests[0].name, "software");
        let check = judge("dcgmi diag -r 1 -j", Some(0), PASSED, "");
        assert_eq!(check.passed, Some(true), "{}", check.evidence);
        assert_eq!(
            check.evidence,
            "`dcgmi diag -r 1 -j`: 1 of 2 test(s) passed"
        );
    }

    #[test]
    fn a_failed_test_fails_the_check_naming_it_and_what_it_said() {
        let text = PASSED.replacen(
            r#""status" : "Pass" } ],
            "test_summary" : { "status" : "Pass" }"#,
            r#""status" : "Fail", "warnings" : [ { "warning" : "Persistence mode for GPU 0 is disabled.", "error_id" : 42 } ] } ],
            "test_summary" : { "status" : "Fail" }"#,
            1,
        );
        let check = judge("dcgmi diag -r 1 -j", Some(226), &text, "");
        assert_eq!(check.passed, Some(false));
        assert!(
            check
                .evidence
                .contains("failed: software (Deployment): Persistence mode for GPU 0 is disabled."),
            "{}",
            check.evidence
        );
    }

    #[test]
    fn dcgm_3s_name_and_no_summary_are_read_too() {
        let text = r#"{"DCGM GPU Diagnostic": {"test_categories": [{"category": "Integration",
            "tests": [{"name": "PCIe", "results": [{"gpu_ids": "0", "status": "Fail", "info": "bandwidth low"}]}]}]}}"#;
        let tests = parse(text).unwrap();
        assert_eq!(tests[0].status, "Fail");
        assert_eq!(tests[0].detail, ["bandwidth low"]);
    }

    #[test]
    fn output_that_is_no_diagnostic_fails_with_what_dcgmi_said() {
        let check = judge(
            "dcgmi diag -r 1 -j",
            Some(255),
            "",
            "Error: unable to establish a connection to the specified host: localhost",
        );
        assert_eq!(check.passed, Some(false));
        assert!(
            check
                .evidence
                .contains("exited 255: Error: unable to establish")
        );
    }
}
