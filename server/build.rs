//! glmtune's build script. `sqlx::migrate!` embeds the files of `server/migrations/`, but on
//! stable Rust a macro cannot tell Cargo which files it read: without this, a new or edited
//! migration would not rebuild the crate, and the binary would go on applying the old set.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
