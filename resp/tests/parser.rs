//! The parser against a model: commands encoded the way clients encode them, cut into
//! arbitrary pieces, come back whole and in order, or as the refusal their size calls for;
//! and arbitrary bytes never panic it (the proptest twin of `resp/fuzz parse_commands`).

use proptest::prelude::*;
use resp::{Command, Event, Limits, Parser, Refusal};

const LIMITS: Limits = Limits {
    args_max: 6,
    arg_bytes_max: 40,
    command_bytes_max: 100,
    inline_bytes_max: 64,
};

fn encode(args: &[Vec<u8>]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// What the parser must make of one command.
fn expected(args: &[Vec<u8>]) -> Event {
    if args.len() > LIMITS.args_max {
        return Event::Refused(Refusal::TooManyArgs {
            count: args.len() as u64,
            max: LIMITS.args_max,
        });
    }
    let mut bytes = 0;
    for a in args {
        if a.len() > LIMITS.arg_bytes_max {
            return Event::Refused(Refusal::ArgTooLarge {
                bytes: a.len() as u64,
                max: LIMITS.arg_bytes_max,
            });
        }
        bytes += a.len();
        if bytes > LIMITS.command_bytes_max {
            return Event::Refused(Refusal::CommandTooLarge {
                max: LIMITS.command_bytes_max,
            });
        }
    }
    Event::Command(Command {
        args: args.to_vec(),
    })
}

fn commands() -> impl Strategy<Value = Vec<Vec<Vec<u8>>>> {
    let arg = prop::collection::vec(any::<u8>(), 0..60);
    prop::collection::vec(prop::collection::vec(arg, 1..9), 1..12)
}

proptest! {
    #[test]
    fn commands_in_any_pieces_come_back_whole(
        commands in commands(),
        cuts in prop::collection::vec(1usize..50, 1..100),
    ) {
        let stream: Vec<u8> = commands.iter().flat_map(|c| encode(c)).collect();
        let mut parser = Parser::new(LIMITS);
        let mut buffer = Vec::new();
        let mut events = Vec::new();
        let mut fed = 0;
        let mut cut = cuts.iter().cycle();
        while fed < stream.len() {
            let end = (fed + cut.next().unwrap()).min(stream.len());
            buffer.extend_from_slice(&stream[fed..end]);
            fed = end;
            loop {
                let (used, event) = parser.advance(&buffer);
                buffer.drain(..used);
                match event {
                    None => break,
                    Some(Err(fatal)) => panic!("well-formed input was fatal: {fatal}"),
                    Some(Ok(e)) => events.push(e),
                }
            }
        }
        prop_assert!(buffer.is_empty());
        prop_assert!(parser.is_idle());
        let want: Vec<Event> = commands.iter().map(|c| expected(c)).collect();
        prop_assert_eq!(events, want);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..600)) {
        resp::fuzz_one(&data);
    }

    #[test]
    fn resp_like_bytes_never_panic(
        parts in prop::collection::vec(
            prop_oneof![
                Just(b"*".to_vec()), Just(b"$".to_vec()), Just(b"\r\n".to_vec()),
                Just(b"-1".to_vec()), Just(b"3".to_vec()), Just(b"99999999999".to_vec()),
                Just(b"GET".to_vec()), Just(b" ".to_vec()), Just(b"\n".to_vec()),
            ],
            0..80,
        )
    ) {
        resp::fuzz_one(&parts.concat());
    }
}
