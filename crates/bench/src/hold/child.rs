//! The hidden `hold` subcommand: a holder in a child process, speaking the
//! protocol as JSON lines over its stdin and stdout.

use anyhow::{Context, Result, anyhow};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::holder::serve;
use super::protocol::{Command, Job, Reply};

/// `hold`: a child holder talking JSON lines over stdin and stdout.
pub async fn child_main() -> Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let first = lines
        .next_line()
        .await
        .context("cannot read the job from stdin")?
        .context("no job on stdin (`hold` is started by `idle`, `broadcast` or `sse`)")?;
    let job: Job = serde_json::from_str(&first).context("malformed job on stdin")?;
    let label = job.label.clone();
    let (command_tx, command_rx) = mpsc::unbounded_channel();
    let (reply_tx, mut reply_rx) = mpsc::unbounded_channel::<Reply>();
    // Cancelled when the parent can no longer be heard or answered.
    let gone = CancellationToken::new();
    let reader = {
        let gone = gone.clone();
        async move {
            loop {
                let line = match lines.next_line().await {
                    Ok(Some(line)) => line,
                    Ok(None) | Err(_) => {
                        gone.cancel();
                        return "stdin closed before `close`: the parent is gone".to_owned();
                    }
                };
                match serde_json::from_str::<Command>(&line) {
                    Ok(command) => {
                        let close = matches!(command, Command::Close);
                        if command_tx.send(command).is_err() || close {
                            // Closing now; the end of stdin no longer matters.
                            return String::new();
                        }
                    }
                    Err(e) => {
                        gone.cancel();
                        return format!("malformed command {line:?}: {e}");
                    }
                }
            }
        }
    };
    let reader = tokio::spawn(reader);
    let writer = {
        let gone = gone.clone();
        tokio::spawn(async move {
            let mut stdout = tokio::io::stdout();
            while let Some(reply) = reply_rx.recv().await {
                let Ok(mut line) = serde_json::to_string(&reply) else {
                    continue;
                };
                line.push('\n');
                if stdout.write_all(line.as_bytes()).await.is_err() || stdout.flush().await.is_err()
                {
                    gone.cancel();
                    return;
                }
            }
        })
    };
    let outcome = tokio::select! {
        outcome = serve(job, command_rx, reply_tx.clone()) => outcome,
        () = gone.cancelled() => {
            // Dropping `serve` drops the connections; the process ends next.
            let why = if reader.is_finished() {
                reader.await.unwrap_or_default()
            } else {
                "stdout closed: the parent is gone".to_owned()
            };
            return Err(anyhow!("{label}: {why}; exiting"));
        }
    };
    if let Err(e) = &outcome {
        let _ = reply_tx.send(Reply::Failed {
            error: format!("{e:#}"),
        });
    }
    drop(reply_tx);
    let _ = writer.await;
    outcome.with_context(|| format!("{label}: holder failed"))
}
