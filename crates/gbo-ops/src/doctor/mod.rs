//! Doctor: every rule of the production runbook as a check with a verdict, evidence and a fix.

pub mod inside;
