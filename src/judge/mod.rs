//! Parsers and verdicts for captured GPU and fabric test outputs.
