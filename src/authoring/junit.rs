//! JUnit XML, the test report format CI systems read.

/// One test case's outcome.
pub struct Case {
    pub class: String,
    pub name: String,
    /// `None` when it passed; else the failure message.
    pub failure: Option<String>,
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A `<testsuite>` document.
pub fn render(suite: &str, cases: &[Case]) -> String {
    let failures = cases.iter().filter(|c| c.failure.is_some()).count();
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\">\n",
        escape(suite),
        cases.len()
    );
    for case in cases {
        xml.push_str(&format!("  <testcase classname=\"{}\" name=\"{}\"", escape(&case.class), escape(&case.name)));
        match &case.failure {
            None => xml.push_str("/>\n"),
            Some(message) => {
                let first = message.lines().next().unwrap_or_default();
                xml.push_str(&format!(
                    ">\n    <failure message=\"{}\">{}</failure>\n  </testcase>\n",
                    escape(first),
                    escape(message)
                ));
            }
        }
    }
    xml.push_str("</testsuite>\n");
    xml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_passes_and_escaped_failures() {
        let xml = render(
            "dx",
            &[
                Case { class: "v2".into(), name: "ok".into(), failure: None },
                Case {
                    class: "v2".into(),
                    name: "bad <one>".into(),
                    failure: Some("expected \"a\" & b\nsecond".into()),
                },
            ],
        );
        assert_eq!(
            xml,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"dx\" tests=\"2\" failures=\"1\" errors=\"0\">\n\
             \x20 <testcase classname=\"v2\" name=\"ok\"/>\n\
             \x20 <testcase classname=\"v2\" name=\"bad &lt;one&gt;\">\n\
             \x20   <failure message=\"expected &quot;a&quot; &amp; b\">expected &quot;a&quot; &amp; b\nsecond</failure>\n  </testcase>\n\
             </testsuite>\n"
        );
    }
}
