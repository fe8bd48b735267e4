//! Prints the catalog's JSON Schema; `make schema` writes it to clusters/catalog.schema.json.
fn main() {
    print!("{}", provisioner_core::catalog::json_schema());
}
