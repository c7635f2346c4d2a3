//! A small Hugging Face Hub on 127.0.0.1 for `upload-dataset --to hf://…`: the routes
//! the upload uses (repository creation, file tree with pages, resolve, preupload, the
//! LFS batch API with presigned-style upload and verify addresses, NDJSON commits),
//! holding repositories in memory, checking what each request must carry, and recording
//! every request so tests can assert exactly what was sent.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// One request as the server read it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Header names lowercased.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Request {
    /// `METHOD /path` without the query.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path())
    }

    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A repository on the test Hub.
#[derive(Debug, Default, Clone)]
pub struct Repo {
    pub private: bool,
    pub files: BTreeMap<String, Vec<u8>>,
}

#[derive(Default)]
struct State {
    repos: BTreeMap<String, Repo>,
    lfs: BTreeMap<String, Vec<u8>>,
    requests: Vec<Request>,
    /// Statuses to answer the next matching requests with instead (path suffix, status).
    failures: VecDeque<(String, u16)>,
}

/// The running test Hub.
pub struct MiniHub {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    state: Arc<Mutex<State>>,
}

/// What the Hub's default `.gitattributes` says about parquet.
pub const GITATTRIBUTES: &str = "*.parquet filter=lfs diff=lfs merge=lfs -text\n";

/// Entries per page of a tree listing: small, so that paging is exercised.
const PAGE: usize = 2;

impl MiniHub {
    /// Starts a Hub that accepts `token` for writing.
    pub fn start(token: &str) -> MiniHub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let (shared, base, token) = (state.clone(), url.clone(), token.to_string());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (state, base, token) = (shared.clone(), base.clone(), token.clone());
                std::thread::spawn(move || serve(stream, &state, &base, &token));
            }
        });
        MiniHub { url, state }
    }

    /// The requests received since the last call.
    pub fn take_requests(&self) -> Vec<Request> {
        std::mem::take(&mut self.state.lock().unwrap().requests)
    }

    /// A repository as it is now.
    pub fn repo(&self, id: &str) -> Option<Repo> {
        self.state.lock().unwrap().repos.get(id).cloned()
    }

    /// The next request whose path ends with `suffix` is answered with `status`.
    pub fn fail_next(&self, suffix: &str, status: u16) {
        let mut state = self.state.lock().unwrap();
        state.failures.push_back((suffix.to_string(), status));
    }
}

fn serve(stream: TcpStream, state: &Mutex<State>, base: &str, token: &str) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    while let Some(request) = read_request(&mut reader) {
        let (status, headers, body) = {
            let mut state = state.lock().unwrap();
            state.requests.push(request.clone());
            let failure = state
                .failures
                .iter()
                .position(|(suffix, _)| request.path().ends_with(suffix.as_str()));
            match failure {
                Some(at) => {
                    let (_, status) = state.failures.remove(at).unwrap();
                    let body = json!({"error": "the test Hub is failing on purpose"});
                    (status, Vec::new(), body.to_string().into_bytes())
                }
                None => handle(&mut state, &request, base, token),
            }
        };
        let mut head = format!(
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nContent-Type: application/json\r\n",
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(&body).is_err() {
            return;
        }
    }
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        headers.insert(name.trim().to_lowercase(), value.trim().to_string());
    }
    let mut body = Vec::new();
    if let Some(length) = headers.get("content-length") {
        body.resize(length.parse().ok()?, 0);
        reader.read_exact(&mut body).ok()?;
    } else if headers
        .get("transfer-encoding")
        .is_some_and(|t| t == "chunked")
    {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            let size = usize::from_str_radix(size.trim(), 16).ok()?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).ok()?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
    Some(Request {
        method,
        target,
        headers,
        body,
    })
}

type Answer = (u16, Vec<(String, String)>, Vec<u8>);

fn answer(status: u16, body: Value) -> Answer {
    (status, Vec::new(), body.to_string().into_bytes())
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn handle(state: &mut State, request: &Request, base: &str, token: &str) -> Answer {
    let path = request.path().to_string();
    // Uploads go to a presigned address: they carry the ticket the batch answer gave,
    // never the user's token.
    if let Some(oid) = path.strip_prefix("/lfs-upload/") {
        if request.method != "PUT" || request.headers.contains_key("authorization") {
            return answer(
                400,
                json!({"error": "a presigned upload is a PUT without a token"}),
            );
        }
        if request.headers.get("x-upload-ticket").map(String::as_str) != Some(oid) {
            return answer(403, json!({"error": "missing the upload ticket"}));
        }
        if sha256(&request.body) != oid {
            return answer(400, json!({"error": "the bytes do not hash to the oid"}));
        }
        state.lfs.insert(oid.to_string(), request.body.clone());
        return answer(200, json!({}));
    }
    if request.headers.get("authorization") != Some(&format!("Bearer {token}")) {
        return answer(401, json!({"error": "Invalid username or password."}));
    }
    if let Some(oid) = path.strip_prefix("/lfs-verify/") {
        let check = request.json();
        let stored = state.lfs.get(oid);
        return match stored {
            Some(bytes) if check["oid"] == oid && check["size"] == bytes.len() => {
                answer(200, json!({}))
            }
            _ => answer(422, json!({"error": "object not uploaded"})),
        };
    }
    if path == "/api/repos/create" && request.method == "POST" {
        let body = request.json();
        let id = format!(
            "{}/{}",
            body["organization"].as_str().unwrap(),
            body["name"].as_str().unwrap()
        );
        if body["type"] != "dataset" {
            return answer(400, json!({"error": "this test Hub holds datasets only"}));
        }
        if state.repos.contains_key(&id) {
            return answer(
                409,
                json!({"error": "You already created this dataset repo", "url": format!("{base}/datasets/{id}")}),
            );
        }
        let mut repo = Repo {
            private: body["private"].as_bool().unwrap_or(false),
            ..Repo::default()
        };
        repo.files
            .insert(".gitattributes".into(), GITATTRIBUTES.as_bytes().to_vec());
        state.repos.insert(id.clone(), repo);
        return answer(
            200,
            json!({"url": format!("{base}/datasets/{id}"), "name": id}),
        );
    }
    if let Some(rest) = path.strip_prefix("/api/datasets/") {
        let (id, action) = split_repo(rest);
        let Some(repo) = state.repos.get(&id).cloned() else {
            return answer(404, json!({"error": "Repository not found"}));
        };
        if action == "tree/main" && request.method == "GET" {
            return tree(&repo, request, base, &id);
        }
        if action == "preupload/main" && request.method == "POST" {
            let body = request.json();
            let files: Vec<Value> = body["files"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| {
                    let path = f["path"].as_str().unwrap();
                    assert!(BASE64.decode(f["sample"].as_str().unwrap()).is_ok());
                    assert!(f["size"].is_u64());
                    let mode = if path.ends_with(".parquet") {
                        "lfs"
                    } else {
                        "regular"
                    };
                    json!({"path": path, "uploadMode": mode, "shouldIgnore": false})
                })
                .collect();
            return answer(200, json!({"files": files}));
        }
        if action == "commit/main" && request.method == "POST" {
            return commit(state, &id, request);
        }
    }
    if let Some(rest) = path.strip_prefix("/datasets/") {
        if let Some(id) = rest.strip_suffix(".git/info/lfs/objects/batch") {
            return lfs_batch(state, id, request, base);
        }
        let (id, action) = split_repo(rest);
        if let Some(file) = action.strip_prefix("resolve/main/") {
            return match state.repos.get(&id).and_then(|r| r.files.get(file)) {
                Some(bytes) => (200, Vec::new(), bytes.clone()),
                None => answer(404, json!({"error": "Entry not found"})),
            };
        }
    }
    answer(
        404,
        json!({"error": format!("no route {} {path}", request.method)}),
    )
}

/// `owner/name/rest…` → (`owner/name`, `rest…`).
fn split_repo(rest: &str) -> (String, String) {
    let mut parts = rest.splitn(3, '/');
    let owner = parts.next().unwrap_or_default();
    let name = parts.next().unwrap_or_default();
    (
        format!("{owner}/{name}"),
        parts.next().unwrap_or_default().to_string(),
    )
}

fn tree(repo: &Repo, request: &Request, base: &str, id: &str) -> Answer {
    let mut entries: Vec<Value> = Vec::new();
    let mut folders = std::collections::BTreeSet::new();
    for (path, bytes) in &repo.files {
        if let Some((folder, _)) = path.rsplit_once('/') {
            folders.insert(folder.to_string());
        }
        entries
            .push(json!({"type": "file", "path": path, "size": bytes.len(), "oid": sha256(bytes)}));
    }
    entries.extend(
        folders
            .into_iter()
            .map(|f| json!({"type": "directory", "path": f})),
    );
    let start: usize = request
        .target
        .split_once("cursor=")
        .map(|(_, c)| c.parse().unwrap())
        .unwrap_or(0);
    let page: Vec<Value> = entries.iter().skip(start).take(PAGE).cloned().collect();
    let mut headers = Vec::new();
    if start + PAGE < entries.len() {
        headers.push((
            "Link".to_string(),
            format!(
                "<{base}/api/datasets/{id}/tree/main?recursive=true&cursor={}>; rel=\"next\"",
                start + PAGE
            ),
        ));
    }
    (200, headers, Value::Array(page).to_string().into_bytes())
}

fn lfs_batch(state: &mut State, id: &str, request: &Request, base: &str) -> Answer {
    const LFS_JSON: &str = "application/vnd.git-lfs+json";
    if request.headers.get("accept").map(String::as_str) != Some(LFS_JSON)
        || request.headers.get("content-type").map(String::as_str) != Some(LFS_JSON)
    {
        return answer(
            406,
            json!({"error": "the LFS batch API speaks application/vnd.git-lfs+json"}),
        );
    }
    if !state.repos.contains_key(id) {
        return answer(404, json!({"error": "Repository not found"}));
    }
    let body = request.json();
    assert_eq!(body["operation"], "upload");
    assert_eq!(body["hash_algo"], "sha256");
    let objects: Vec<Value> = body["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let oid = o["oid"].as_str().unwrap();
            if state.lfs.contains_key(oid) {
                json!({"oid": oid, "size": o["size"]})
            } else {
                json!({"oid": oid, "size": o["size"], "actions": {
                    "upload": {"href": format!("{base}/lfs-upload/{oid}"), "header": {"x-upload-ticket": oid}},
                    "verify": {"href": format!("{base}/lfs-verify/{oid}"), "header": {}}
                }})
            }
        })
        .collect();
    answer(200, json!({"transfer": "basic", "objects": objects}))
}

fn commit(state: &mut State, id: &str, request: &Request) -> Answer {
    if request.headers.get("content-type").map(String::as_str) != Some("application/x-ndjson") {
        return answer(400, json!({"error": "a commit is NDJSON"}));
    }
    let lines: Vec<Value> = String::from_utf8(request.body.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    if lines.first().map(|l| &l["key"]) != Some(&json!("header")) {
        return answer(400, json!({"error": "a commit starts with its header"}));
    }
    let mut files = state.repos[id].files.clone();
    for line in &lines[1..] {
        let value = &line["value"];
        let path = value["path"].as_str().unwrap().to_string();
        match line["key"].as_str().unwrap() {
            "file" => {
                assert_eq!(value["encoding"], "base64");
                files.insert(
                    path,
                    BASE64.decode(value["content"].as_str().unwrap()).unwrap(),
                );
            }
            "lfsFile" => {
                assert_eq!(value["algo"], "sha256");
                let Some(bytes) = state.lfs.get(value["oid"].as_str().unwrap()) else {
                    return answer(
                        422,
                        json!({"error": format!("{path}: LFS object not uploaded")}),
                    );
                };
                files.insert(path, bytes.clone());
            }
            "deletedFile" => {
                if files.remove(&path).is_none() {
                    return answer(
                        404,
                        json!({"error": format!("{path}: no such file to delete")}),
                    );
                }
            }
            other => return answer(400, json!({"error": format!("unknown key {other}")})),
        }
    }
    state.repos.get_mut(id).unwrap().files = files;
    answer(
        200,
        json!({"commitOid": sha256(&request.body), "success": true}),
    )
}
