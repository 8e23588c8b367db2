//! The in-service guard: the one place that refuses disruptive work on
//! nodes the inventory marks `in_service`, unless the operator opts in
//! with [`FLAG`].

use crate::exit::BadInput;
use crate::inventory::Node;

/// The flag that lets disruptive work touch nodes in service.
pub const FLAG: &str = "--allow-in-service";

/// Refuses when any of `nodes` is in service and `allowed` is false.
/// `harm` says what the work would do to them, after "… marked in
/// service (a, b); " (e.g. "stages image would disrupt them").
pub fn in_service<'a>(
    nodes: impl IntoIterator<Item = &'a Node>,
    harm: &str,
    allowed: bool,
) -> Result<(), BadInput> {
    if allowed {
        return Ok(());
    }
    let names: Vec<&str> = nodes
        .into_iter()
        .filter(|n| n.in_service)
        .map(|n| n.name.as_str())
        .collect();
    refuse(&names, harm)
}

/// The refusal for the named nodes in service; `Ok` when there are none.
fn refuse(names: &[&str], harm: &str) -> Result<(), BadInput> {
    if names.is_empty() {
        return Ok(());
    }
    Err(BadInput(format!(
        "{} node(s) are marked in service ({}); {harm}. \
         Leave them out with --select, or pass {FLAG}",
        names.len(),
        crate::diag::clip(&names.join(", "), 200),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_service_nodes_are_named_with_the_flag() {
        let err = refuse(&["a", "c"], "imaging would wipe them").unwrap_err();
        assert!(
            err.0.starts_with("2 node(s) are marked in service (a, c)"),
            "{}",
            err.0
        );
        assert!(err.0.contains("imaging would wipe them"), "{}", err.0);
        assert!(err.0.contains(FLAG), "{}", err.0);
        assert!(refuse(&[], "x").is_ok());
        let none: [&Node; 0] = [];
        assert!(in_service(none, "x", false).is_ok());
    }
}
