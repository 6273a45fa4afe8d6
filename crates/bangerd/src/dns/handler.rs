//! The request handler: one DNS message in, one out. Authoritative names are
//! answered from the zone; everything else goes to the forwarder.

use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use hickory_proto::serialize::binary::BinDecoder;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponseBuilder, Queries};

use super::RateLimit;
use super::upstream::Forwarder;
use super::zone::{Answer, Zone};

/// EDNS version this server speaks.
const EDNS_VERSION: u8 = 0;

pub(crate) struct Handler {
    zone: Arc<Zone>,
    forwarder: Option<Forwarder>,
    refused_log: RateLimit,
}

impl Handler {
    pub fn new(zone: Arc<Zone>, forwarder: Option<Forwarder>) -> Self {
        Handler {
            zone,
            forwarder,
            refused_log: RateLimit::new(Duration::from_secs(30)),
        }
    }

    /// Decide the answer for a well-formed single-question query.
    async fn answer(&self, qname: &Name, qtype: RecordType, qclass: DNSClass) -> Reply {
        if qclass != DNSClass::IN || matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
            return Reply::error(ResponseCode::Refused);
        }
        if let Some(answer) = self.zone.lookup(qname, qtype) {
            return Reply {
                authoritative: true,
                answer,
            };
        }
        match &self.forwarder {
            Some(f) => Reply {
                authoritative: false,
                answer: f.forward(qname, qtype).await,
            },
            None => {
                if let Some(suppressed) = self.refused_log.allow() {
                    tracing::warn!(
                        name = %qname,
                        suppressed,
                        "refusing a query outside .{}: no upstream DNS servers are configured",
                        self.zone.origin()
                    );
                }
                Reply::error(ResponseCode::Refused)
            }
        }
    }
}

struct Reply {
    authoritative: bool,
    answer: Answer,
}

impl Reply {
    fn error(rcode: ResponseCode) -> Self {
        Reply {
            authoritative: false,
            answer: Answer {
                rcode,
                answers: Vec::new(),
                authorities: Vec::new(),
                additionals: Vec::new(),
            },
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let resp_edns = request.edns.as_ref().map(|req| {
            let mut e = Edns::new();
            e.set_max_payload(req.max_payload().max(512));
            e.set_version(EDNS_VERSION);
            e
        });

        // A question name compressed by a pointer is answered FORMERR
        // with no question section: the reply would carry the question's
        // bytes as they came, and the pointer (into the query's header,
        // the only thing before a first question) would then name the
        // reply's header: a reply no resolver decodes (found by fuzzing,
        // fuzz/README.md).
        let compressed = question_has_pointer(request.queries.as_bytes());
        let no_question;
        let reply = if compressed {
            Reply::error(ResponseCode::FormErr)
        } else if request
            .edns
            .as_ref()
            .is_some_and(|e| e.version() > EDNS_VERSION)
        {
            Reply::error(ResponseCode::BADVERS)
        } else if request.metadata.message_type != MessageType::Query {
            Reply::error(ResponseCode::FormErr)
        } else if request.metadata.op_code != OpCode::Query {
            Reply::error(ResponseCode::NotImp)
        } else {
            match request.request_info() {
                Ok(info) => {
                    let q = info.query.original();
                    self.answer(q.name(), q.query_type(), q.query_class()).await
                }
                // Not exactly one question.
                Err(_) => Reply::error(ResponseCode::FormErr),
            }
        };

        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = reply.authoritative;
        metadata.recursion_available = self.forwarder.is_some();
        metadata.response_code = reply.answer.rcode;
        let queries = if compressed {
            no_question = Queries::read(&mut BinDecoder::new(&[]), 0)
                .expect("reading no question from no bytes");
            &no_question
        } else {
            &request.queries
        };
        let mut builder = MessageResponseBuilder::new(queries, None);
        if let Some(e) = &resp_edns {
            builder.edns(e);
        }
        let a = &reply.answer;
        let response = builder.build(
            metadata,
            a.answers.iter(),
            a.authorities.iter(),
            std::iter::empty(),
            a.additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, peer = %request.src(), "sending DNS response failed");
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

/// Whether the question section `bytes` (as the query carried it, already
/// decoded once) names anything through a compression pointer: a label
/// length with its two top bits set. Malformed bytes count as one.
fn question_has_pointer(bytes: &[u8]) -> bool {
    let mut i = 0;
    while i < bytes.len() {
        // One question: its name's labels, then type and class.
        loop {
            let Some(&len) = bytes.get(i) else {
                return true;
            };
            if len & 0xc0 != 0 {
                return true;
            }
            i += 1 + usize::from(len);
            if len == 0 {
                break;
            }
        }
        i += 4;
    }
    i != bytes.len()
}

#[cfg(test)]
mod pointer_tests {
    use super::question_has_pointer;

    #[test]
    fn a_compressed_question_name_is_told_apart() {
        // vm. A IN, then the same with the name a pointer to offset 2.
        assert!(!question_has_pointer(b"\x02vm\x00\x00\x01\x00\x01"));
        assert!(!question_has_pointer(b""));
        assert!(question_has_pointer(b"\xc0\x02\x00\x01\x00\x01"));
        assert!(question_has_pointer(b"\x02vm\xc0\x0c\x00\x01\x00\x01"));
        // Cut short.
        assert!(question_has_pointer(b"\x02vm"));
    }
}
