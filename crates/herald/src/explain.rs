//! `herald criteria`: explains whether a resource matches criteria, clause by clause,
//! offline (no settings, storage or bus). Exit status: 0 match, 1 no match, 2 criteria
//! (or a topic) that are invalid or unsupported, or input that cannot be read; the
//! refusal is printed as an `OperationOutcome`, as the API would send it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use herald_criteria::{explain, ExplainRequest, Interaction, Language, TopicDefinition};
use herald_fhir::{IssueType, OperationOutcome};
use serde_json::Value;

#[derive(Debug, Args)]
pub struct CriteriaArgs {
    /// The criteria to explain, e.g. 'Observation?code=http://loinc.org|2345-7&subject=Patient/1'.
    /// Optional with --topic (then only the topic's triggers are explained).
    #[arg(long, value_name = "STR", required_unless_present = "topic")]
    criteria: Option<String>,
    /// How to read --criteria: an R4 search URL, a subscription filter
    /// ('Observation?patient=…', 'Observation.patient=…' or 'patient=…'), a FHIRPath
    /// boolean over %current / %previous, or CEL over current, previous and event.
    #[arg(long, value_enum, default_value_t = CriteriaLanguage::Search)]
    language: CriteriaLanguage,
    /// The resource (JSON) after the change; on --interaction delete, the deleted resource.
    #[arg(long, value_name = "FILE")]
    resource: PathBuf,
    /// The resource (JSON) before the change; makes the interaction an update.
    #[arg(long, value_name = "FILE")]
    previous: Option<PathBuf>,
    /// A SubscriptionTopic (JSON): the criteria are evaluated as its filters (held to its
    /// canFilterBy) and its resource triggers are explained too.
    #[arg(long, value_name = "FILE")]
    topic: Option<PathBuf>,
    /// The interaction [default: update with --previous, else create].
    #[arg(long, value_enum)]
    interaction: Option<CriteriaInteraction>,
    /// Print the explanation as JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CriteriaLanguage {
    Search,
    Filter,
    Fhirpath,
    Cel,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CriteriaInteraction {
    Create,
    Update,
    Delete,
}

/// A refusal: where it is (`criteria`, `topic`, a file) and the outcome to print.
struct Refusal(OperationOutcome);

fn read_json(path: &Path, what: &str) -> Result<Value, Refusal> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Refusal(
            OperationOutcome::error(
                IssueType::NotFound,
                format!("cannot read the {what} file {}: {e}", path.display()),
            )
            .at(what),
        )
    })?;
    serde_json::from_str(&text).map_err(|e| {
        Refusal(
            OperationOutcome::error(
                IssueType::Structure,
                format!("the {what} file {} is not JSON: {e}", path.display()),
            )
            .at(what),
        )
    })
}

/// Runs the command; prints to stdout (the explanation or the outcome) and stderr (a
/// one-line reason for a refusal).
pub fn run(args: &CriteriaArgs) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    let (code, text) = match evaluate(args) {
        Ok(explanation) => {
            let text = if args.json {
                format!("{:#}\n", explanation.to_json())
            } else {
                explanation.to_string()
            };
            (u8::from(!explanation.matched), text)
        }
        Err(Refusal(outcome)) => {
            eprintln!(
                "herald criteria: {} ({})",
                outcome.diagnostics,
                outcome.code.code()
            );
            (2, format!("{:#}\n", outcome.to_json()))
        }
    };
    // A closed stdout (`| head`) is not worth a panic; the exit status still tells.
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
    ExitCode::from(code)
}

fn evaluate(args: &CriteriaArgs) -> Result<herald_criteria::Explanation, Refusal> {
    let resource = read_json(&args.resource, "resource")?;
    let previous = args
        .previous
        .as_deref()
        .map(|p| read_json(p, "previous"))
        .transpose()?;
    let topic = match &args.topic {
        Some(path) => Some(
            TopicDefinition::from_resource(&read_json(path, "topic")?)
                .map_err(|e| Refusal(e.outcome("topic")))?,
        ),
        None => None,
    };
    let request = ExplainRequest {
        criteria: args.criteria.as_deref(),
        language: match args.language {
            CriteriaLanguage::Search => Language::Search,
            CriteriaLanguage::Filter => Language::Filter,
            CriteriaLanguage::Fhirpath => Language::FhirPath,
            CriteriaLanguage::Cel => Language::Cel,
        },
        resource: &resource,
        previous: previous.as_ref(),
        topic: topic.as_ref(),
        interaction: args.interaction.map(|i| match i {
            CriteriaInteraction::Create => Interaction::Create,
            CriteriaInteraction::Update => Interaction::Update,
            CriteriaInteraction::Delete => Interaction::Delete,
        }),
    };
    explain(&request).map_err(|e| Refusal(e.outcome("criteria")))
}
