"""A year of realistic joint-review sessions as case events, for ``bench history``.

Each session is filed as the service files it (the shapes of ``signaling.core.append_event``
and its callers): ``session.created`` at a clerk's window; invitations to 1-4 departments
of the packaged demo directory, each rung, then accepted, declined or left unanswered;
the clerk, the applicant and each reviewer who accepted join and leave (now and then a
dropped connection and a resume); ~20 chat messages; 1-3 opinions; a document still;
``session.ended`` and ``archive.sealed``. A case has 1-3 sessions, days apart; sessions
are spread over 365 days of working hours. Deterministic for a seed: the same run files
the same events.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

YEAR_START = 1735689600.0  # 2025-01-01 00:00 UTC
DAY = 86_400.0
WINDOWS = [f"琶洲 {n} 号窗口" for n in range(1, 9)]
SURNAMES = "陈林王李张刘赵孙周吴郑黄何罗高"
GIVEN = ["晓", "静", "建国", "明", "芳", "伟", "洋", "敏", "丽", "杰", "娜", "强"]
MATTERS = [
    "食品经营许可",
    "个体工商户设立登记",
    "税务登记变更",
    "建设工程规划许可",
    "进出口货物收发货人备案",
    "营业执照变更",
]
CHAT = [
    "请出示营业执照原件",
    "收到，材料已上传",
    "平面图第二页看不清，请重新拍一下",
    "经营场所面积是多少？",
    "好的，稍等",
    "法人身份证正反面都需要",
    "这个我们部门没有意见",
    "请补充租赁合同",
]
MISSING = ["租赁合同", "法人身份证复印件", "平面布局图", "健康证明"]


def _name(rng: random.Random) -> str:
    return rng.choice(SURNAMES) + rng.choice(GIVEN)


Actor = dict[str, Any]  # as signaling.models.Actor dumps it


def _actor(sub: str, name: str, role: str) -> Actor:
    return {"sub": sub, "name": name, "role": role, "dept": None, "level": None}


def _hex(rng: random.Random, bits: int = 48) -> str:
    return f"{rng.getrandbits(bits):0{bits // 4}x}"


@dataclass
class _Session:
    """The events of one session, filed with its case's running ``seq``."""

    case_id: str
    session_id: str
    seq: int
    ts: float
    events: list[dict[str, Any]] = field(default_factory=list)

    def add(self, type_: str, actor: dict[str, Any] | None, dt: float, **data: Any) -> None:
        self.seq += 1
        self.ts += dt
        self.events.append(
            {
                "seq": self.seq,
                "ts": round(self.ts, 6),
                "type": type_,
                "case_id": self.case_id,
                "session_id": self.session_id,
                "actor": actor,
                "data": data,
            }
        )


class Year:
    """``sessions`` sessions over a year: ``cases()`` yields each case's events."""

    def __init__(self, sessions: int, seed: int = 1) -> None:
        from signaling.directory import load_directory

        self.sessions = sessions
        self.seed = seed
        directory = load_directory(None)
        self.depts = [(d.id, d.level) for d in directory.departments]
        self.clerks: list[tuple[Actor, str]] = [
            (_actor(f"clerk-{n + 1:02d}", _name(random.Random(n)), "clerk"), window)
            for n, window in enumerate(WINDOWS)
        ]
        self.reviewers: dict[str, list[Actor]] = {
            dept: [
                {
                    "sub": f"rev-{dept}-{k}",
                    "name": _name(random.Random(f"{dept}-{k}")),
                    "role": "reviewer",
                    "dept": dept,
                    "level": level,
                }
                for k in range(1, 7)
            ]
            for dept, level in self.depts
        }

    def cases(self) -> Iterator[tuple[str, list[dict[str, Any]]]]:
        """(case_id, its events in log order), case after case; exactly ``sessions``
        sessions in all, the n-th starting n/sessions of the way through the year."""
        rng = random.Random(self.seed)
        done = 0
        number = 0
        while done < self.sessions:
            number += 1
            count = min(rng.choices((1, 2, 3), (70, 22, 8))[0], self.sessions - done)
            case_id = f"GZ-2025-{number:06d}"
            day = int(365 * done / self.sessions)
            start = YEAR_START + day * DAY + rng.uniform(8.5, 16.5) * 3600
            events: list[dict[str, Any]] = []
            seq = 0
            for k in range(count):
                sid = f"s_{self.seed}_{done + k:07d}_{_hex(rng, 32)}"
                s = _Session(case_id, sid, seq, start + k * rng.uniform(2, 10) * DAY)
                self._session(rng, s)
                events += s.events
                seq = s.seq
            done += count
            yield case_id, events

    def _session(self, rng: random.Random, s: _Session) -> None:
        clerk, window = rng.choice(self.clerks)
        applicant_name = _name(rng)
        s.add(
            "session.created",
            clerk,
            0,
            applicant_name=applicant_name,
            matter=rng.choice(MATTERS),
            window=window,
        )
        applicant = _actor(f"applicant-{_hex(rng)}", applicant_name, "applicant")
        present = [(clerk, f"p_{_hex(rng)}"), (applicant, f"p_{_hex(rng)}")]
        for who, pid in present:
            s.add("participant.joined", who, rng.uniform(5, 60), participant_id=pid)
        depts = rng.sample(self.depts, rng.randint(1, min(4, len(self.depts))))
        accepted: list[Actor] = []
        for n, (dept, level) in enumerate(depts):
            inv = f"inv_{_hex(rng)}"
            s.add(
                "invitation.created",
                clerk,
                rng.uniform(1, 20),
                invitation_id=inv,
                dept=dept,
                level=level,
                reviewer=None,
            )
            s.add("invitation.rang", None, 0.01, invitation_id=inv, reason=None)
            answer = rng.random()
            reviewer = rng.choice(self.reviewers[dept])
            if n == 0 or answer < 0.75:  # at least one department comes
                dt = rng.uniform(10, 90)
                s.add("invitation.accepted", reviewer, dt, invitation_id=inv, reason=None)
                accepted.append(reviewer)
            elif answer < 0.88:
                s.add(
                    "invitation.declined",
                    reviewer,
                    rng.uniform(10, 90),
                    invitation_id=inv,
                    reason="本部门不涉及此事项",
                )
            else:
                s.add("invitation.unanswered", None, 120, invitation_id=inv, reason=None)
        for reviewer in accepted:
            pid = f"p_{_hex(rng)}"
            present.append((reviewer, pid))
            s.add("participant.joined", reviewer, rng.uniform(5, 40), participant_id=pid)
        if rng.random() < 0.15:  # a dropped connection, resumed within the grace period
            who, pid = rng.choice(present)
            s.add("participant.disconnected", who, rng.uniform(30, 300), participant_id=pid)
            s.add("participant.resumed", who, rng.uniform(2, 20), participant_id=pid)
        for _ in range(rng.randint(12, 28)):
            who, pid = rng.choice(present)
            text = f"{rng.choice(CHAT)}（{rng.randint(1, 99)}）"
            s.add("chat.message", who, rng.uniform(10, 90), participant_id=pid, text=text)
        body = _hex(rng, 64).encode()
        s.add(
            "snapshot.taken",
            clerk,
            rng.uniform(10, 60),
            snapshot_id=f"snap_{_hex(rng)}",
            sha256=hashlib.sha256(body).hexdigest(),
            size=rng.randint(200_000, 2_000_000),
            content_type="image/jpeg",
        )
        for reviewer in rng.sample(accepted, min(len(accepted), rng.randint(1, 3))):
            decision = rng.choices(("approve", "materials_missing", "refer", "note"), (6, 2, 1, 1))
            missing = rng.sample(MISSING, 2) if decision[0] == "materials_missing" else []
            s.add(
                "opinion.filed",
                reviewer,
                rng.uniform(20, 120),
                opinion_id=f"op_{_hex(rng)}",
                decision=decision[0],
                missing=missing,
                refer_to="city-amr" if decision[0] == "refer" else None,
                note="同意办理" if decision[0] == "approve" else None,
                created_at=round(s.ts, 6),
            )
        for who, pid in present[1:]:
            s.add("participant.left", who, rng.uniform(2, 30), participant_id=pid, reason="left")
        s.add("session.ended", clerk, rng.uniform(2, 10))
        s.add("participant.left", clerk, 0.01, participant_id=present[0][1], reason="session_ended")
        head = hashlib.sha256(s.session_id.encode()).hexdigest()
        s.add(
            "archive.sealed",
            None,
            rng.uniform(1, 5),
            manifest_sha256=hashlib.sha256(head.encode()).hexdigest(),
            chain_head=head,
            files=6 + len(present),
            events=len(s.events) + 1,
        )
