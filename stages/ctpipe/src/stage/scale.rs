//! How much of a profile's work to do: `full` (as declared) or `smoke` (a rehearsal).
//!
//! A smoke run has the same nodes, inputs, methods, network presets and settings as the full
//! profile, with the counts cut to what a 2-core CPU runs in minutes: optimiser steps, batch
//! sizes, training rows, samples, seeds and picture sizes (each stage's [`super::Stage::smoke`]
//! says which). The cuts change the configs, so the artifacts get their own keys; where a cut
//! changes nothing (fetching a dataset) the artifact is the same content and is shared. Refs,
//! logs, plans and reports of a smoke run live under the profile name `<profile>@smoke`, so a
//! rehearsal never moves the refs of the real run.

use crate::error::usage;
use anyhow::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scale {
    #[default]
    Full,
    Smoke,
}

impl Scale {
    pub fn parse(s: &str) -> Result<Scale> {
        match s {
            "full" | "" => Ok(Scale::Full),
            "smoke" => Ok(Scale::Smoke),
            other => Err(usage(format!("scale `{other}`: expected full or smoke"))),
        }
    }

    /// The name refs, logs, plans and reports of `profile` are kept under at this scale.
    /// `@` cannot occur in a profile name, so no profile's namespace is another's.
    pub fn namespace(self, profile: &str) -> String {
        match self {
            Scale::Full => profile.to_string(),
            Scale::Smoke => format!("{profile}@smoke"),
        }
    }
}

/// Cap an optional count (unset means "all"): at most `most`.
pub fn cap_opt(v: &mut Option<u64>, most: u64) {
    *v = Some(v.map_or(most, |x| x.min(most)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_namespace() {
        assert_eq!(Scale::parse("smoke").unwrap(), Scale::Smoke);
        assert_eq!(Scale::parse("full").unwrap().namespace("cifar10"), "cifar10");
        assert_eq!(Scale::Smoke.namespace("cifar10"), "cifar10@smoke");
        let e = crate::error::one_line(&Scale::parse("tiny").unwrap_err());
        assert_eq!(e, "scale `tiny`: expected full or smoke");
        let (mut a, mut b) = (None, Some(10));
        cap_opt(&mut a, 64);
        cap_opt(&mut b, 64);
        assert_eq!((a, b), (Some(64), Some(10)));
    }
}
