//! `workflow`, `push`, `cache`, `runs`.
use clap::{Args, Subcommand};
use super::Output;
#[derive(Debug, Subcommand)]
pub enum WorkflowCommand { Render }
#[derive(Debug, Subcommand)]
pub enum CacheCommand { Prune }
#[derive(Debug, Args)]
pub struct PushArgs {}
#[derive(Debug, Args)]
pub struct RunsArgs {}
pub fn workflow(_c: WorkflowCommand, _o: Output) -> anyhow::Result<u8> { anyhow::bail!("todo") }
pub fn cache(_c: CacheCommand, _o: Output) -> anyhow::Result<u8> { anyhow::bail!("todo") }
pub fn push(_c: PushArgs, _o: Output) -> anyhow::Result<u8> { anyhow::bail!("todo") }
pub fn runs(_c: RunsArgs, _o: Output) -> anyhow::Result<u8> { anyhow::bail!("todo") }
