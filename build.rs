//! Converts the TOML data files (knowledge base, package catalog) to JSON at
//! build time: they stay easy to edit by hand, and the binary parses JSON,
//! several times faster than TOML, when `detect` needs them. A TOML syntax
//! error in a data file fails the build.

use std::path::Path;

fn main() {
    let out = std::env::var("OUT_DIR").expect("OUT_DIR");
    let read = |source: &str| -> toml::Table {
        println!("cargo:rerun-if-changed={source}");
        let text = std::fs::read_to_string(source).unwrap_or_else(|e| panic!("{source}: {e}"));
        toml::from_str(&text).unwrap_or_else(|e| panic!("{source}: {e}"))
    };
    let write = |name: &str, value: &dyn erased::Json| {
        std::fs::write(Path::new(&out).join(name), value.json()).expect("write");
    };
    // The catalog as one document; the knowledge base one file per table,
    // so each table is parsed only when something asks for it.
    write("catalog.json", &read("src/distro/catalog.toml"));
    for (table, value) in read("src/compat/knowledge.toml") {
        write(&format!("knowledge-{table}.json"), &value);
    }
}

mod erased {
    pub trait Json {
        fn json(&self) -> String;
    }

    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> String {
            serde_json::to_string(self).expect("JSON")
        }
    }
}
