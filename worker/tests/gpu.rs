//! GPU discovery without CUDA, against a stand-in `nvidia-smi` that reports a
//! different free memory per GPU: the CUDA ordinal maps through CUDA_VISIBLE_DEVICES.

use std::os::unix::fs::PermissionsExt;

use labelfleet_worker::gpu::{free_memory, visible_gpus};

#[test]
fn free_memory_follows_the_visible_devices() {
    let dir = tempfile::tempdir().unwrap();
    let smi = dir.path().join("nvidia-smi");
    std::fs::write(
        &smi,
        "#!/bin/sh\n\
         if [ \"$1\" = \"-L\" ]; then echo 'GPU 0: A (UUID: a)'; echo 'GPU 1: B (UUID: b)'; echo 'GPU 2: C (UUID: c)'; exit 0; fi\n\
         for last; do :; done\n\
         echo $(( (last + 1) * 1000 ))\n",
    )
    .unwrap();
    std::fs::set_permissions(&smi, std::fs::Permissions::from_mode(0o755)).unwrap();
    // SAFETY: this test binary has one test, so nothing reads the environment meanwhile.
    unsafe {
        std::env::set_var("LABELFLEET_NVIDIA_SMI", &smi);
        std::env::remove_var("CUDA_VISIBLE_DEVICES");
    }
    assert_eq!(visible_gpus(), ["0", "1", "2"]);
    assert_eq!(free_memory(1).unwrap(), 2000 * 1024 * 1024);
    unsafe {
        std::env::set_var("CUDA_VISIBLE_DEVICES", "2,0");
    }
    assert_eq!(visible_gpus(), ["2", "0"]);
    // cuda:0 of this process is physical GPU 2.
    assert_eq!(free_memory(0).unwrap(), 3000 * 1024 * 1024);
    assert_eq!(free_memory(1).unwrap(), 1000 * 1024 * 1024);
    assert!(free_memory(2).unwrap_err().contains("ordinal 2"));
}
