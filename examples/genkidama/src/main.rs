//! The Genkidama pipeline binary (being built; see issue 4).

fn main() {
    eprintln!("genkidama: the pipeline is being built; see README.md");
    std::process::exit(2);
}
