//! One line of the trainer's progress stream, version 1, as typed Rust
//! (schema/progress.schema.json): the fields each event requires are
//! required here, the others optional; fields the schema does not name are
//! ignored, so a trainer that says more is still understood.

use serde::Deserialize;

use crate::manifest::Stage;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Event {
    Start {
        #[serde(default)]
        stage: Option<Stage>,
        #[serde(default)]
        device: Option<String>,
    },
    Progress {
        stage: Stage,
        step: u64,
        total: u64,
        loss: f64,
        rate: f64,
        eta_s: f64,
        /// With a time budget (`--minutes`): the budget and the seconds of it used.
        #[serde(default)]
        budget_s: Option<f64>,
        #[serde(default)]
        elapsed_s: Option<f64>,
    },
    Preview {
        stage: Stage,
        step: u64,
        path: String,
    },
    Phase {
        #[serde(default)]
        phase: Option<Phase>,
        #[serde(default)]
        message: Option<String>,
    },
    Done {
        stage: Stage,
        name: String,
        bundle: String,
    },
    Cancelled {
        stage: Stage,
        checkpoint: String,
    },
    /// Its `kind` is also the trainer's exit status, which is what is acted on.
    Error {
        message: String,
    },
}

/// What the trainer is doing between progress events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Benchmark,
    Train,
    Export,
    Verify,
    Write,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Benchmark => "benchmark",
            Phase::Train => "train",
            Phase::Export => "export",
            Phase::Verify => "verify",
            Phase::Write => "write",
        }
    }
}

impl Event {
    /// One line of the stream; `None` for anything that is not an event of
    /// version 1 (a stray line, an event this pie does not know).
    pub fn parse(line: &str) -> Option<Event> {
        #[derive(Deserialize)]
        struct Line {
            v: u64,
            #[serde(flatten)]
            event: Event,
        }
        serde_json::from_str::<Line>(line).ok().filter(|l| l.v == 1).map(|l| l.event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_as_the_schema_says_and_extra_fields_are_ignored() {
        let e = Event::parse(
            r#"{"v":1,"event":"progress","stage":2,"step":3,"total":10,"loss":0.5,"rate":1.5,"eta_s":4.7,"new":1}"#,
        );
        assert_eq!(
            e,
            Some(Event::Progress {
                stage: Stage::Subject,
                step: 3,
                total: 10,
                loss: 0.5,
                rate: 1.5,
                eta_s: 4.7,
                budget_s: None,
                elapsed_s: None
            })
        );
        let e = Event::parse(
            r#"{"v":1,"event":"progress","stage":1,"step":3,"total":10,"loss":0.5,"rate":1.5,"eta_s":4.7,"budget_s":120,"elapsed_s":30.5}"#,
        );
        assert!(
            matches!(e, Some(Event::Progress { budget_s: Some(120.0), elapsed_s: Some(30.5), .. })),
            "{e:?}"
        );
        let e = Event::parse(
            r#"{"v":1,"event":"start","stage":1,"name":"x","total":5,"device":"cpu","threads":2}"#,
        );
        assert_eq!(e, Some(Event::Start { stage: Some(Stage::Scene), device: Some("cpu".into()) }));
        let e = Event::parse(r#"{"v":1,"event":"phase","stage":1,"phase":"export","message":"exporting"}"#);
        assert_eq!(e, Some(Event::Phase { phase: Some(Phase::Export), message: Some("exporting".into()) }));
        let e = Event::parse(r#"{"v":1,"event":"error","kind":"bad_input","message":"no"}"#);
        assert_eq!(e, Some(Event::Error { message: "no".into() }));
        let e = Event::parse(r#"{"v":1,"event":"done","stage":1,"name":"x","bundle":"/l/x","wall_s":3}"#);
        assert!(matches!(e, Some(Event::Done { stage: Stage::Scene, .. })), "{e:?}");
    }

    #[test]
    fn what_is_not_a_version_1_event_is_passed_over() {
        for line in [
            "not json",
            r#"{"v":2,"event":"done","stage":1,"name":"x","bundle":"b"}"#,
            r#"{"v":1,"event":"progress","stage":1,"step":3}"#,
            r#"{"v":1,"event":"progress","stage":3,"step":3,"total":4,"loss":0,"rate":0,"eta_s":0}"#,
            r#"{"v":1,"event":"celebrate"}"#,
            r#"{"event":"done","stage":1,"name":"x","bundle":"b"}"#,
        ] {
            assert_eq!(Event::parse(line), None, "{line}");
        }
    }
}
