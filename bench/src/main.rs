//! `waggle-bench <name> <out.json>`: one benchmark per module, run by
//! `cargo xtask bench <name>`, which builds this in release mode.

mod lb;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [name, out] if name == "lb" => lb::run(std::path::Path::new(out)),
        _ => anyhow::bail!("usage: waggle-bench lb <out.json>"),
    }
}
