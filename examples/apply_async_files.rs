//! Port of the seed "python多进程处理数据": split the files of a folder into
//! `batch_num` tasks, process each batch with `apply_async` and an error
//! callback that prints failures in the parent, then report the elapsed time.
//!
//! Usage: `cargo run --example apply_async_files [FOLDER]`. Without a folder,
//! a demo folder with ten data files and one sub-folder is made in the temp
//! directory (the sub-folder cannot be read as a file: its batch fails and the
//! error callback prints it, as `open()` of a directory does in Python).
//!
//! Python (the seed):
//! ```python
//! pool = mp.Pool(batch_num)
//! for name, param in param_dict.items():
//!     pool.apply_async(single_worker, args=(param,), error_callback=error_callback)
//! pool.close()
//! pool.join()
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use multiprocess as mp;

/// The seed's `single_worker`: read every file of the batch, "plot" it (here:
/// sum the numbers), and print the last file's name.
fn single_worker(file_paths: Vec<PathBuf>) {
    let mut data = Vec::new();
    for file_path in &file_paths {
        let text = std::fs::read_to_string(file_path)
            .unwrap_or_else(|e| panic!("{e}: '{}'", file_path.display()));
        data.push(text);
    }
    let total: f64 = data
        .iter()
        .flat_map(|t| t.split_whitespace())
        .filter_map(|w| w.parse::<f64>().ok())
        .sum();
    let _plot = total; // plt.plot(data); plt.show() in the seed
    if let Some(last) = file_paths.last() {
        println!(
            "finishing {}",
            last.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        );
    }
}

/// The seed's `error_callback`: print the error in the main process.
fn error_callback(e: &mp::Error) {
    match e {
        mp::Error::Remote { message, .. } => println!("Error: {message}"),
        other => println!("Error: {other}"),
    }
}

/// The seed's `task_split`: deal the folder's entries round-robin into
/// `batch_num` tasks.
fn task_split(path: &Path, mut batch_num: usize) -> anyhow::Result<BTreeMap<String, Vec<PathBuf>>> {
    let mut pathlist: Vec<PathBuf> = std::fs::read_dir(path)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    pathlist.sort();
    let len_path = pathlist.len();
    let mut param_dict: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    if len_path <= batch_num {
        batch_num = len_path;
    }
    for (i, p) in pathlist.iter().enumerate().take(batch_num) {
        param_dict.insert(format!("task{i}"), vec![p.clone()]);
    }
    if len_path >= batch_num {
        for (i, p) in pathlist.iter().enumerate().skip(batch_num) {
            param_dict
                .entry(format!("task{}", i % batch_num))
                .or_default()
                .push(p.clone());
        }
    }
    Ok(param_dict)
}

fn demo_folder() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("mp-apply-async-files-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("subfolder"))?;
    for i in 0..10 {
        let numbers: Vec<String> = (0..1000)
            .map(|k| ((k * (i + 1)) % 97).to_string())
            .collect();
        std::fs::write(dir.join(format!("data_{i:02}.txt")), numbers.join("\n"))?;
    }
    Ok(dir)
}

fn main() -> anyhow::Result<()> {
    mp::init();
    let start_t = Instant::now();
    let num_cores = mp::cpu_count();
    println!("本地计算机有: {num_cores} 核心");

    let (folder, demo) = match std::env::args().nth(1) {
        Some(p) => (PathBuf::from(p), false),
        None => (demo_folder()?, true),
    };
    let batch_num = 8;
    let param_dict = task_split(&folder, batch_num)?;

    let pool = mp::Pool::new(batch_num)?;
    for (_name, param) in param_dict {
        pool.apply_async_with(single_worker, param, |_| {}, error_callback)?;
    }
    pool.close();
    pool.join()?;

    let elapsed_sec = start_t.elapsed().as_secs_f64();
    println!("多进程计算 共消耗: {elapsed_sec:.2} 秒");
    if demo {
        std::fs::remove_dir_all(&folder)?;
    }
    Ok(())
}
