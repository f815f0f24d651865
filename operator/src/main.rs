fn main() {
    print!("{}", keyraft_operator::crd::crd_yaml().unwrap());
}
