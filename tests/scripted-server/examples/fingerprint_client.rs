//! The rmcp client as it comes, for `tests/fingerprints/capture.py`: connects to the URL given as
//! the only argument over Streamable HTTP, lists the tools and exits. It keeps rmcp's defaults
//! (`clientInfo` from rmcp's own build environment, default capabilities and headers) because
//! the capture records what an unconfigured rmcp client sends.
//!
//! Run: `cargo run -p behavry-scripted-server --example fingerprint_client -- http://127.0.0.1:PORT/mcp`

use rmcp::{ServiceExt, transport::StreamableHttpClientTransport};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .ok_or("usage: fingerprint_client <streamable-http-url>")?;
    let transport = StreamableHttpClientTransport::from_uri(url);
    let client = ().serve(transport).await?;
    let tools = client.list_all_tools().await?;
    println!("{} tools", tools.len());
    client.cancel().await?;
    Ok(())
}
