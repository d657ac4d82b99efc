//! Generates the etcd v3 wire types and gRPC services from `proto/`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Services whose RPCs waggle does not serve answer `Unimplemented`.
        .generate_default_stubs(true)
        .compile_protos(&["proto/etcdserverpb/rpc.proto", "proto/mvccpb/kv.proto"], &["proto"])?;
    Ok(())
}
