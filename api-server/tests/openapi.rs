//! The generated OpenAPI document is part of the contract: it must not change by accident (a
//! refactoring of handlers, annotations or routers keeps it byte-identical). An intended change is
//! made by regenerating the golden file and committing it with the change that caused it.

use std::path::PathBuf;

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/openapi.json")
}

/// The document as `plamatio-api openapi` prints it (pretty JSON and a final newline).
fn generated() -> String {
    let document = plamatio_api::openapi_document()
        .to_pretty_json()
        .expect("the OpenAPI document serializes");
    format!("{document}\n")
}

#[test]
fn generated_openapi_document_equals_the_committed_one() {
    let path = golden_path();
    let generated = generated();
    if std::env::var_os("UPDATE_OPENAPI").is_some_and(|value| value == "1") {
        std::fs::write(&path, &generated).expect("write the golden OpenAPI document");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_else(|error| {
        panic!(
            "cannot read {}: {error}; create it with \
             `UPDATE_OPENAPI=1 cargo test -p plamatio-api --test api openapi`",
            path.display()
        )
    });
    if generated != committed {
        let line = generated
            .lines()
            .zip(committed.lines())
            .position(|(new, old)| new != old)
            .map_or_else(
                || generated.lines().count().min(committed.lines().count()) + 1,
                |index| index + 1,
            );
        panic!(
            "the generated OpenAPI document differs from {} (first at line {line}: generated {:?}, \
             committed {:?}). If the change is intended, regenerate it with \
             `UPDATE_OPENAPI=1 cargo test -p plamatio-api --test api openapi` and commit the file \
             with the change",
            path.display(),
            generated.lines().nth(line - 1).unwrap_or(""),
            committed.lines().nth(line - 1).unwrap_or(""),
        );
    }
}
