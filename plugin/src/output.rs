//! What a command shows, in the format asked for: its text for people (`-o table`), or the same
//! facts as JSON or YAML for scripts.

use std::io::Write;

use serde_json::Value;

use crate::cli::OutputFormat;

/// A command's result: `text` for the table format, `value` for JSON and YAML.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub text: String,
    pub value: Value,
}

/// Writes `report` to `out` in `format`.
pub fn emit(report: &Report, format: OutputFormat, out: &mut dyn Write) -> anyhow::Result<()> {
    match format {
        OutputFormat::Table => out.write_all(report.text.as_bytes())?,
        OutputFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(&report.value)?)?,
        OutputFormat::Yaml => out.write_all(serde_saphyr::to_string(&report.value)?.as_bytes())?,
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn each_format_prints_its_own_form() {
        let report = Report { text: "NAME\nci\n".into(), value: json!({"items": [{"name": "ci"}]}) };
        let shown = |format| {
            let mut out = Vec::new();
            emit(&report, format, &mut out).expect("emit");
            String::from_utf8(out).expect("utf-8")
        };
        assert_eq!(shown(OutputFormat::Table), "NAME\nci\n");
        let json: Value = serde_json::from_str(&shown(OutputFormat::Json)).expect("json");
        assert_eq!(json, report.value);
        let yaml: Value = serde_saphyr::from_str(&shown(OutputFormat::Yaml)).expect("yaml");
        assert_eq!(yaml, report.value);
    }
}
