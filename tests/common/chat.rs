//! A small OpenAI-compatible chat-completions server on 127.0.0.1 for the
//! tests of the kinds that ask an LLM: it answers with a function of the
//! prompt, records every request, and stops accepting after a limit (a
//! server that dies halfway).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// A chat-completions server answering with `answer(prompt)`; it stops accepting after `limit` requests.
pub struct Server {
    pub port: u16,
    pub requests: Arc<Mutex<Vec<serde_json::Value>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

pub fn serve(port: u16, limit: usize, answer: fn(&str) -> String) -> Server {
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let log = requests.clone();
    let thread = std::thread::spawn(move || {
        for _ in 0..limit {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            let mut length = 0;
            reader.read_line(&mut line).unwrap();
            if line.is_empty() {
                continue; // a bare connection from `stop`
            }
            assert!(line.starts_with("POST /v1/chat/completions "), "{line}");
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                if h == "\r\n" || h.is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let req: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let content = answer(req["messages"][0]["content"].as_str().unwrap());
            log.lock().unwrap().push(req);
            let resp = serde_json::json!({
                "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "test-model",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
            })
            .to_string();
            let mut stream = reader.into_inner();
            write!(stream, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{resp}", resp.len()).unwrap();
        }
    });
    Server {
        port,
        requests,
        thread: Some(thread),
    }
}

impl Server {
    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
    pub fn stop(mut self) {
        // Unblock `accept` with connections until the thread has served its limit.
        while !self.thread.as_ref().unwrap().is_finished() {
            let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        self.thread.take().unwrap().join().unwrap();
    }
}
