use gguf_sleep::{chat::ChatFormat, convo::prompt_tokens, engine::Model};
fn main() {
    let p = std::env::args().nth(1).unwrap();
    let m = Model::load(std::path::Path::new(&p)).unwrap();
    let f = ChatFormat::for_model(&m).unwrap();
    println!(
        "{:?}",
        f.render(None, "What is the capital of France?").unwrap()
    );
    let t = prompt_tokens(&m, &f, None, "What is the capital of France?").unwrap();
    println!("{:?}", t);
    for x in &t {
        print!("[{}]", String::from_utf8_lossy(&m.token_bytes(*x, true)));
    }
    println!();
}
