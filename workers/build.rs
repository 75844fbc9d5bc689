// `sqlx::migrate!` embeds ../migrations at compile time, and cargo does not watch that
// directory by itself: without this, a new migration file leaves a stale binary that
// refuses databases migrated by a newer one.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
